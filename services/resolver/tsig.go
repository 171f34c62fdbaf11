package resolver

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// tsigKey is the shared secret of TSIG (RFC 8945) that transfers, NOTIFY
// and the queries of secondaries are signed with.
type tsigKey struct {
	name   string // lower case, fully qualified
	alg    string // one of tsigAlgorithms' values: fully qualified
	secret string // base64, as miekg/dns takes it
}

// tsigAlgorithms are the HMAC algorithms a key may name (RFC 8945 §6;
// HMAC-MD5 is left out: deprecated, and miekg/dns no longer signs with it).
var tsigAlgorithms = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha224": dns.HmacSHA224,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// tsigFudge is the time skew a signature allows, in seconds (RFC 8945
// §10 recommends 300).
const tsigFudge = 300

// parseTSIGKey parses "name:algorithm:secret" (the secret in base64, as
// tsig-keygen and keymgr print it), e.g.
// "xfr-key:hmac-sha256:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=".
func parseTSIGKey(v string) (*tsigKey, error) {
	v = strings.TrimSpace(v)
	name, rest, ok := strings.Cut(v, ":")
	alg, secret, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 {
		return nil, fmt.Errorf("want name:algorithm:secret, got %d field(s)", strings.Count(v, ":")+1)
	}
	if name == "" {
		return nil, errors.New("empty key name")
	}
	fq, err := canonicalName(name)
	if err != nil || fq == "." {
		return nil, fmt.Errorf("key name %q is not a domain name", name)
	}
	canon, ok := tsigAlgorithms[strings.TrimSuffix(strings.ToLower(alg), ".")]
	if !ok {
		return nil, fmt.Errorf("algorithm %q: want one of hmac-sha1, hmac-sha224, hmac-sha256, hmac-sha384, hmac-sha512", alg)
	}
	raw, err := base64.StdEncoding.DecodeString(secret)
	if err != nil {
		return nil, fmt.Errorf("secret is not base64: %w", err)
	}
	if len(raw) < 16 {
		return nil, fmt.Errorf("secret is %d bytes, want at least 16 (RFC 8945 §6.1 advises the hash's size)", len(raw))
	}
	return &tsigKey{name: fq, alg: canon, secret: secret}, nil
}

// canonicalName is name as it reads back from the wire: lower case, fully
// qualified, with the escapes miekg/dns writes (a key named `"` is `\"`
// in a TSIG record unpacked from a request), so names compare as text.
func canonicalName(name string) (string, error) {
	fq := dns.Fqdn(name)
	if _, ok := dns.IsDomainName(fq); !ok {
		return "", errors.New("not a domain name")
	}
	buf := make([]byte, 256)
	off, err := dns.PackDomainName(fq, buf, 0, nil, false)
	if err != nil {
		return "", err
	}
	back, _, err := dns.UnpackDomainName(buf[:off], 0)
	if err != nil {
		return "", err
	}
	return strings.ToLower(back), nil
}

// loadTSIGKey reads a key file: one line "name:algorithm:secret"; blank
// lines and lines starting with "#" are skipped.
func loadTSIGKey(path string) (*tsigKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	var line string
	for l := range strings.Lines(string(data)) {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if line != "" {
			return nil, fmt.Errorf("key file %s: more than one key (one name:algorithm:secret line)", path)
		}
		line = l
	}
	if line == "" {
		return nil, fmt.Errorf("key file %s: no key", path)
	}
	k, err := parseTSIGKey(line)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// Generate implements dns.TsigProvider: the HMAC of msg (laid out by
// miekg/dns for the MAC), for this key's name and algorithm only.
func (k *tsigKey) Generate(msg []byte, t *dns.TSIG) ([]byte, error) {
	if !strings.EqualFold(t.Hdr.Name, k.name) || !strings.EqualFold(dns.Fqdn(t.Algorithm), k.alg) {
		return nil, dns.ErrSecret // BADKEY: another key, or another algorithm
	}
	raw, err := base64.StdEncoding.DecodeString(k.secret)
	if err != nil {
		return nil, fmt.Errorf("tsig secret: %w", err)
	}
	var h func() hash.Hash
	switch k.alg {
	case dns.HmacSHA1:
		h = sha1.New
	case dns.HmacSHA224:
		h = sha256.New224
	case dns.HmacSHA256:
		h = sha256.New
	case dns.HmacSHA384:
		h = sha512.New384
	case dns.HmacSHA512:
		h = sha512.New
	default:
		return nil, dns.ErrKeyAlg
	}
	mac := hmac.New(h, raw)
	mac.Write(msg)
	return mac.Sum(nil), nil
}

// Verify implements dns.TsigProvider.
func (k *tsigKey) Verify(msg []byte, t *dns.TSIG) error {
	want, err := k.Generate(msg, t)
	if err != nil {
		return err
	}
	got, err := hex.DecodeString(t.MAC)
	if err != nil || !hmac.Equal(want, got) {
		return dns.ErrSig
	}
	return nil
}

// noKey is the provider of replies that carry no MAC (BADKEY, BADSIG).
type noKey struct{}

func (noKey) Generate([]byte, *dns.TSIG) ([]byte, error) { return nil, dns.ErrSecret }
func (noKey) Verify([]byte, *dns.TSIG) error             { return dns.ErrSecret }

// tsigErrorCode maps a verification error to the TSIG error of the
// response (RFC 8945 §5.2).
func tsigErrorCode(err error) uint16 {
	switch {
	case errors.Is(err, dns.ErrTime):
		return dns.RcodeBadTime
	case errors.Is(err, dns.ErrSig):
		return dns.RcodeBadSig
	default:
		return dns.RcodeBadKey
	}
}

// signMsg appends a TSIG record for the request's key to m (with tsigErr,
// unsigned for BADKEY and BADSIG) and packs it signed (RFC 8945 §5.3).
// requestMAC is the request's MAC for the first message of a reply and
// the previous message's MAC after it, with timersOnly set (RFC 8945
// §5.3.1). It returns the message and its MAC.
func signMsg(m *dns.Msg, rt *dns.TSIG, k *tsigKey, requestMAC string, timersOnly bool, tsigErr uint16) ([]byte, string, error) {
	t := &dns.TSIG{
		// Fqdn: a request's empty algorithm (a malformed TSIG) would
		// pack as a record whose length does not match its data.
		Hdr:        dns.RR_Header{Name: dns.Fqdn(rt.Hdr.Name), Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
		Algorithm:  dns.Fqdn(rt.Algorithm),
		Fudge:      tsigFudge,
		TimeSigned: uint64(time.Now().Unix()),
		OrigId:     m.Id,
		Error:      tsigErr,
	}
	m.Extra = append(m.Extra, t)
	var p dns.TsigProvider = noKey{} // BADKEY and BADSIG: nothing is signed
	if k != nil {
		p = k
	}
	b, mac, err := dns.TsigGenerateWithProvider(m, p, requestMAC, timersOnly)
	if err != nil {
		return nil, "", fmt.Errorf("signing a reply: %w", err)
	}
	return b, mac, nil
}

// tsigFailure is the NOTAUTH reply to a request whose TSIG failed (RFC
// 8945 §5.2): the TSIG error says why; BADKEY and BADSIG replies carry no
// MAC, BADTIME ones are signed.
func tsigFailure(r *dns.Msg, k *tsigKey, verr error) ([]byte, error) {
	rt := r.IsTsig()
	m := new(dns.Msg)
	m.SetRcode(r, dns.RcodeNotAuth)
	m.Extra = nil
	code := tsigErrorCode(verr)
	if code != dns.RcodeBadTime {
		k = nil
	}
	b, _, err := signMsg(m, rt, k, rt.MAC, false, code)
	return b, err
}
