// Package discovery lets probers that share a key find each other on a
// LAN: each announces itself on a UDP multicast group, answers queries
// sent to the group or to each interface's broadcast address, and keeps a
// bounded table of the peers it has heard.
//
// Every datagram is authenticated: a JSON body followed by the 32-byte
// HMAC-SHA256, under the shared key, of a domain string and the body. The
// body carries its send time in milliseconds; a datagram is accepted only
// when its MAC verifies, its time is within Window of ours, and it is newer
// than the last one accepted from the same sender id, so a datagram
// captured on the LAN cannot be replayed to plant an address in the peer
// table. Everything else is dropped unread and counted (Config.OnDrop).
package discovery

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
)

// DefaultGroup is the multicast group and port probers use.
const DefaultGroup = "239.255.74.2:7403"

// MaxMessage bounds a discovery datagram (body and MAC).
const MaxMessage = 1024

// MinKeyLen is the shortest shared key accepted, in bytes.
const MinKeyLen = 16

// DefaultWindow is how far a datagram's time may be from ours.
const DefaultWindow = 30 * time.Second

// macSize is the length of the HMAC-SHA256 that ends every datagram.
const macSize = sha256.Size

// macDomain is prefixed to the body under the MAC, so a MAC made for
// another protocol with the same key cannot pass here.
const macDomain = "switchboard prober discovery v2\n"

// Reasons a datagram is dropped, as Config.OnDrop receives them.
const (
	// DropUnauthenticated: no MAC, or one that does not verify under the
	// key (a spoofed or foreign datagram, or another key).
	DropUnauthenticated = "unauthenticated"
	// DropStale: authenticated, but its time is more than Window from ours.
	DropStale = "stale"
	// DropReplayed: authenticated and recent, but not newer than the last
	// datagram accepted from its sender (a replay, or a duplicate heard on
	// two interfaces).
	DropReplayed = "replayed"
	// DropMalformed: too long, or an authenticated body that does not parse.
	DropMalformed = "malformed"
	// DropOverflow: a new sender while the table of senders is full of
	// recent ones.
	DropOverflow = "overflow"
)

// maxSenders bounds the table of last-seen times per sender id.
const maxSenders = 4 * MaxPeers

// MaxPeers bounds the peer table.
const MaxPeers = 256

// Self is what a prober announces about itself.
type Self struct {
	// Name identifies the prober (host name by default).
	Name string
	// GRPCAddr and BandwidthAddr are its listen addresses; an empty or
	// unspecified host is replaced by the sender's address on receipt.
	GRPCAddr, BandwidthAddr string
}

// Peer is another prober heard on the LAN.
type Peer struct {
	// Name, GRPCAddr and BandwidthAddr as announced (hosts filled in).
	Name, GRPCAddr, BandwidthAddr string
	// Addr is the address its datagrams came from.
	Addr netip.Addr
	// LastSeen is when it was last heard.
	LastSeen time.Time
}

// Message types.
const (
	typeAnnounce = "announce"
	typeQuery    = "query"
	typeAnswer   = "answer"
)

// version is the protocol version in every body.
const version = 2

// message is the JSON body of every datagram.
type message struct {
	V    int    `json:"v"`
	Type string `json:"t"`
	ID   string `json:"id"`
	TS   int64  `json:"ts"` // send time, Unix milliseconds
	Name string `json:"name,omitempty"`
	GRPC string `json:"grpc,omitempty"`
	BW   string `json:"bw,omitempty"`
}

// seal returns the datagram of body: body || HMAC-SHA256(key, domain || body).
func seal(key, body []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(macDomain))
	mac.Write(body)
	return mac.Sum(body[:len(body):len(body)])
}

// open returns the body of an authentic datagram.
func open(key, b []byte) ([]byte, bool) {
	if len(b) <= macSize {
		return nil, false
	}
	body, sum := b[:len(b)-macSize], b[len(b)-macSize:]
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(macDomain))
	mac.Write(body)
	return body, hmac.Equal(mac.Sum(nil), sum)
}

// parseMessage decodes and validates an authenticated body.
func parseMessage(b []byte) (message, error) {
	var m message
	if len(b) > MaxMessage {
		return m, errors.New("too long")
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, err
	}
	if m.V != version {
		return m, errors.New("unknown version")
	}
	switch m.Type {
	case typeAnnounce, typeQuery, typeAnswer:
	default:
		return m, errors.New("unknown type")
	}
	if m.ID == "" || len(m.ID) > 64 || len(m.Name) > 253 {
		return m, errors.New("bad id or name")
	}
	for _, a := range []string{m.GRPC, m.BW} {
		if a == "" {
			continue
		}
		if _, p, err := net.SplitHostPort(a); err != nil || p == "" {
			return m, fmt.Errorf("bad address %q", a)
		}
	}
	return m, nil
}

// Config tunes a Node.
type Config struct {
	// Key is the shared secret every datagram is authenticated with (at
	// least MinKeyLen bytes); probers with another key are not heard.
	Key []byte
	// Window is how far a datagram's send time may be from ours (default
	// DefaultWindow): older ones are dropped as stale.
	Window time.Duration
	// OnDrop, when set, is called (from a reading goroutine) with the
	// reason each time a datagram is dropped.
	OnDrop func(reason string)
	// Group is the multicast group:port (DefaultGroup when empty).
	Group string
	// Announce is the announcement period (default 30s).
	Announce time.Duration
	// Expire drops peers not heard for this long (default 3 × Announce).
	Expire time.Duration
	// Interfaces, when set, limits discovery to these interface names.
	Interfaces []string
	// OnNewPeer, when set, is called (from the reading goroutine) each
	// time a prober not in the table is heard.
	OnNewPeer func(Peer)
}

// Node is one prober's discovery endpoint.
type Node struct {
	self   Self
	id     string
	cfg    Config
	group  netip.AddrPort
	listen *ipv4.PacketConn // bound to the group port, joined to the group
	lconn  net.PacketConn
	query  *ipv4.PacketConn // ephemeral port: queries out, answers in
	qconn  net.PacketConn
	ifaces []net.Interface
	bcast  []netip.Addr

	mu     sync.Mutex
	peers  map[string]Peer  // by id
	last   map[string]int64 // by sender id: time of the newest datagram accepted
	sentTS int64            // time of the newest datagram sent
}

func reuse(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		if serr == nil {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// newNode checks cfg and returns a node without sockets.
func newNode(cfg Config, self Self) (*Node, error) {
	if len(cfg.Key) < MinKeyLen {
		return nil, fmt.Errorf("discovery key: %d bytes; at least %d are needed (discovery is authenticated)", len(cfg.Key), MinKeyLen)
	}
	cfg.Key = slices.Clone(cfg.Key)
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Group == "" {
		cfg.Group = DefaultGroup
	}
	if cfg.Announce <= 0 {
		cfg.Announce = 30 * time.Second
	}
	if cfg.Expire <= 0 {
		cfg.Expire = 3 * cfg.Announce
	}
	g, err := netip.ParseAddrPort(cfg.Group)
	if err != nil || !g.Addr().Is4() || !g.Addr().IsMulticast() {
		return nil, fmt.Errorf("discovery group %q: want an IPv4 multicast address:port", cfg.Group)
	}
	var idb [8]byte
	_, _ = rand.Read(idb[:])
	return &Node{self: self, id: hex.EncodeToString(idb[:]), cfg: cfg, group: g, peers: map[string]Peer{}, last: map[string]int64{}}, nil
}

// Listen opens the node's sockets in the caller's network namespace and
// joins the group on every up, multicast-capable interface it sees now.
// cfg.Key is required.
func Listen(cfg Config, self Self) (*Node, error) {
	n, err := newNode(cfg, self)
	if err != nil {
		return nil, err
	}
	cfg, g := n.cfg, n.group
	lc := net.ListenConfig{Control: reuse}
	n.lconn, err = lc.ListenPacket(context.Background(), "udp4", ":"+strconv.Itoa(int(g.Port())))
	if err != nil {
		return nil, fmt.Errorf("discovery socket: %w", err)
	}
	n.qconn, err = lc.ListenPacket(context.Background(), "udp4", ":0")
	if err != nil {
		n.lconn.Close()
		return nil, fmt.Errorf("discovery query socket: %w", err)
	}
	n.listen, n.query = ipv4.NewPacketConn(n.lconn), ipv4.NewPacketConn(n.qconn)
	for _, p := range []*ipv4.PacketConn{n.listen, n.query} {
		_ = p.SetMulticastTTL(1)
		_ = p.SetMulticastLoopback(true)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	grp := &net.UDPAddr{IP: g.Addr().AsSlice()}
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagUp == 0 || (len(cfg.Interfaces) > 0 && !slices.Contains(cfg.Interfaces, ifi.Name)) {
			continue
		}
		if ifi.Flags&net.FlagMulticast != 0 && n.listen.JoinGroup(&ifi, grp) == nil {
			n.ifaces = append(n.ifaces, ifi)
		}
		if ifi.Flags&net.FlagBroadcast == 0 {
			continue
		}
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			if pn, ok := a.(*net.IPNet); ok {
				if b, ok := broadcastOf(pn); ok {
					n.bcast = append(n.bcast, b)
				}
			}
		}
	}
	if len(n.ifaces) == 0 && len(n.bcast) == 0 {
		n.Close()
		return nil, errors.New("no interface to discover peers on")
	}
	return n, nil
}

func broadcastOf(pn *net.IPNet) (netip.Addr, bool) {
	ip4 := pn.IP.To4()
	if ip4 == nil || len(pn.Mask) != 4 {
		return netip.Addr{}, false
	}
	var b [4]byte
	for i := range b {
		b[i] = ip4[i] | ^pn.Mask[i]
	}
	return netip.AddrFrom4(b), true
}

// Close closes the sockets; Run returns.
func (n *Node) Close() {
	for _, c := range []net.PacketConn{n.lconn, n.qconn} {
		if c != nil {
			c.Close()
		}
	}
}

// Run announces and answers until ctx ends, then closes the node.
func (n *Node) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); n.read(n.lconn) }()
	go func() { defer wg.Done(); n.read(n.qconn) }()
	defer wg.Wait()
	defer n.Close()
	t := time.NewTicker(n.cfg.Announce)
	defer t.Stop()
	for {
		n.sendGroup(n.listen, n.msg(typeAnnounce))
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			n.expire()
		}
	}
}

// msg returns a sealed datagram of type typ. Its time is the clock's, but
// always past the previous datagram's, so that receivers' replay check
// never drops two datagrams sent in one millisecond.
func (n *Node) msg(typ string) []byte {
	n.mu.Lock()
	ts := max(time.Now().UnixMilli(), n.sentTS+1)
	n.sentTS = ts
	n.mu.Unlock()
	b, _ := json.Marshal(message{V: version, Type: typ, ID: n.id, TS: ts, Name: n.self.Name, GRPC: n.self.GRPCAddr, BW: n.self.BandwidthAddr})
	return seal(n.cfg.Key, b)
}

func (n *Node) drop(reason string) {
	if n.cfg.OnDrop != nil {
		n.cfg.OnDrop(reason)
	}
}

// accept checks an authenticated message's time: within the window of
// now, and newer than the last accepted from its sender, which it then
// becomes. It returns the drop reason, or "".
func (n *Node) accept(m message, now time.Time) string {
	if d := time.Duration(now.UnixMilli()-m.TS) * time.Millisecond; d > n.cfg.Window || d < -n.cfg.Window {
		return DropStale
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if last, ok := n.last[m.ID]; ok && m.TS <= last {
		return DropReplayed
	}
	if _, ok := n.last[m.ID]; !ok && len(n.last) >= maxSenders {
		// Forget senders whose last datagram is outside the window: any
		// replay of theirs is stale anyway.
		cut := now.Add(-n.cfg.Window).UnixMilli()
		for id, ts := range n.last {
			if ts < cut {
				delete(n.last, id)
			}
		}
		if len(n.last) >= maxSenders {
			return DropOverflow
		}
	}
	n.last[m.ID] = m.TS
	return ""
}

// sendGroup sends b to the group on every joined interface.
func (n *Node) sendGroup(p *ipv4.PacketConn, b []byte) {
	grp := &net.UDPAddr{IP: n.group.Addr().AsSlice(), Port: int(n.group.Port())}
	for i := range n.ifaces {
		if p.SetMulticastInterface(&n.ifaces[i]) == nil {
			_, _ = p.WriteTo(b, nil, grp)
		}
	}
}

func (n *Node) read(c net.PacketConn) {
	b := make([]byte, MaxMessage+1)
	for {
		k, from, err := c.ReadFrom(b)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if k > MaxMessage {
			n.drop(DropMalformed)
			continue
		}
		body, ok := open(n.cfg.Key, b[:k])
		if !ok {
			n.drop(DropUnauthenticated)
			continue
		}
		m, err := parseMessage(body)
		if err != nil {
			n.drop(DropMalformed)
			continue
		}
		if m.ID == n.id {
			continue
		}
		if reason := n.accept(m, time.Now()); reason != "" {
			n.drop(reason)
			continue
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		src, _ := netip.AddrFromSlice(ua.IP)
		src = src.Unmap()
		if m.Type == typeQuery {
			_, _ = n.lconn.WriteTo(n.msg(typeAnswer), from)
		}
		if m.Name != "" || m.GRPC != "" {
			n.record(m, src)
		}
	}
}

func (n *Node) record(m message, src netip.Addr) {
	p := Peer{Name: m.Name, GRPCAddr: fill(m.GRPC, src), BandwidthAddr: fill(m.BW, src), Addr: src, LastSeen: time.Now()}
	n.mu.Lock()
	_, known := n.peers[m.ID]
	if !known && len(n.peers) >= MaxPeers {
		n.mu.Unlock()
		return
	}
	n.peers[m.ID] = p
	n.mu.Unlock()
	if !known && n.cfg.OnNewPeer != nil {
		n.cfg.OnNewPeer(p)
	}
}

// fill replaces an empty or unspecified host with src.
func fill(addr string, src netip.Addr) string {
	if addr == "" {
		return ""
	}
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip, err := netip.ParseAddr(h); h == "" || (err == nil && ip.IsUnspecified()) {
		h = src.String()
	}
	return net.JoinHostPort(h, p)
}

func (n *Node) expire() {
	cut := time.Now().Add(-n.cfg.Expire)
	n.mu.Lock()
	for id, p := range n.peers {
		if p.LastSeen.Before(cut) {
			delete(n.peers, id)
		}
	}
	n.mu.Unlock()
}

// Peers returns the peers heard within the expiry, by name.
func (n *Node) Peers() []Peer {
	cut := time.Now().Add(-n.cfg.Expire)
	n.mu.Lock()
	out := make([]Peer, 0, len(n.peers))
	for _, p := range n.peers {
		if !p.LastSeen.Before(cut) {
			out = append(out, p)
		}
	}
	n.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].GRPCAddr < out[j].GRPCAddr
	})
	return out
}

// Query asks the LAN (the group and every interface's broadcast address)
// who is there, waits, and returns every peer heard. Run must be running.
func (n *Node) Query(ctx context.Context, wait time.Duration) ([]Peer, error) {
	q := n.msg(typeQuery)
	n.sendGroup(n.query, q)
	for _, b := range n.bcast {
		_, _ = n.qconn.WriteTo(q, &net.UDPAddr{IP: b.AsSlice(), Port: int(n.group.Port())})
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return n.Peers(), nil
}
