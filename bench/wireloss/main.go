// Command wireloss compares the wire protocol over TCP+TLS with its QUIC
// mapping on a lossy link, in one run, interleaved round by round.
//
// Two network namespaces joined by a veth pair make the link: a token
// bucket (tc tbf) limits the rate on each end, and an nftables rule on
// each end drops every Nth incoming packet (numgen inc mod N; on output,
// a drop would fail the sender's sendmsg with EPERM instead of losing the
// packet), so 1% and
// 3% loss are exact and the same for both transports. (netem, for added
// delay, is not in every kernel; the round trip here is the queue's.) On one session, seven
// streams download in bulk while an eighth runs small request/response
// exchanges back to back; each trial reports the bulk goodput and the
// small exchange's p50/p99/max latency. Three setups: the wire protocol
// over TCP+TLS as the edge runs it, the same with TCP_NOTSENT_LOWAT on the
// server's socket (so the kernel holds little unsent bulk data in front of
// a small frame), and the QUIC mapping. Every trial of every round is
// printed, then the medians and the TCP/QUIC ratios.
//
//	go run ./bench/wireloss [-rounds 3] [-duration 8s] [-loss 0,1,3] [-rate 50mbit] [-queue 20ms]
//
// It needs root (namespaces, nftables, tc) and removes what it made.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/switchboard-net/switchboard/pkg/wire"
	"github.com/switchboard-net/switchboard/pkg/wiretransport"
)

const (
	bulkStreams = 7
	smallSize   = 64
	chunk       = 32 << 10
)

func main() {
	rounds := flag.Int("rounds", 3, "rounds; each runs every loss rate over both transports")
	duration := flag.Duration("duration", 8*time.Second, "measured time per trial (after a 1 s warm-up)")
	lossList := flag.String("loss", "0,1,3", "loss rates in percent (each becomes drop 1 in round(100/p))")
	rate := flag.String("rate", "50mbit", "rate limit on each end (tc tbf)")
	queue := flag.Duration("queue", 20*time.Millisecond, "most time a packet may wait in the rate limiter's queue (tbf latency)")
	flag.Parse()
	var losses []float64
	for _, s := range strings.Split(*lossList, ",") {
		p, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || p < 0 || p >= 50 {
			fmt.Fprintf(os.Stderr, "wireloss: bad -loss %q\n", s)
			os.Exit(2)
		}
		losses = append(losses, p)
	}
	// quic-go would otherwise hand the kernel 64 KiB GSO batches that
	// nftables sees, and drops, as one packet.
	os.Setenv("QUIC_GO_DISABLE_GSO", "true")
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, unix.SIGTERM)
	defer stop()
	if err := run(ctx, *rounds, *duration, losses, *rate, *queue); err != nil {
		fmt.Fprintln(os.Stderr, "wireloss:", err)
		os.Exit(1)
	}
}

// link is the two namespaces and their addresses.
type link struct {
	ns   [2]string // client, server
	dev  [2]string
	addr [2]string
}

func sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func newLink(rate string, queue time.Duration) (*link, func(), error) {
	tag := strconv.Itoa(os.Getpid() % 100000)
	l := &link{ns: [2]string{"wlc" + tag, "wls" + tag}, dev: [2]string{"wlc" + tag, "wls" + tag},
		addr: [2]string{"10.199.0.1", "10.199.0.2"}}
	cleanup := func() {
		for _, ns := range l.ns {
			exec.Command("ip", "netns", "del", ns).Run() //nolint:errcheck // best effort
		}
	}
	steps := [][]string{
		{"ip", "netns", "add", l.ns[0]},
		{"ip", "netns", "add", l.ns[1]},
		{"ip", "link", "add", l.dev[0], "netns", l.ns[0], "type", "veth", "peer", "name", l.dev[1], "netns", l.ns[1]},
	}
	for i := range 2 {
		in := []string{"ip", "netns", "exec", l.ns[i]}
		steps = append(steps,
			append(in, "ip", "link", "set", "lo", "up"),
			append(in, "ip", "addr", "add", l.addr[i]+"/24", "dev", l.dev[i]),
			// One MSS per packet: no TSO/GSO batches for nftables to
			// drop as one.
			append(in, "ip", "link", "set", l.dev[i], "gso_max_segs", "1", "up"),
			append(in, "tc", "qdisc", "add", "dev", l.dev[i], "root", "tbf",
				"rate", rate, "burst", "64kb", "latency", queue.String()),
			append(in, "nft", "add", "table", "inet", "wireloss"),
			append(in, "nft", "add", "chain", "inet", "wireloss", "in", "{ type filter hook input priority 0 ; }"),
		)
	}
	for _, s := range steps {
		if err := sh(s...); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	return l, cleanup, nil
}

// setLoss replaces the drop rule on both ends: every Nth packet in.
func (l *link) setLoss(pct float64) error {
	for i := range 2 {
		in := []string{"ip", "netns", "exec", l.ns[i]}
		if err := sh(append(in, "nft", "flush", "chain", "inet", "wireloss", "in")...); err != nil {
			return err
		}
		if pct == 0 {
			continue
		}
		n := int(100/pct + 0.5)
		if err := sh(append(in, "nft", "add", "rule", "inet", "wireloss", "in", "numgen", "inc", "mod", strconv.Itoa(n), "0", "drop")...); err != nil {
			return err
		}
	}
	return nil
}

// inNS runs fn on a thread switched into namespace ns; sockets fn opens
// stay in ns.
func inNS(ns string, fn func()) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		fn()
		done <- nil
	}()
	return <-done
}

func selfSigned() (*tls.Config, *tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edge"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("10.199.0.2")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	srv := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{wiretransport.ALPN}}
	return srv, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, nil
}

// serveStreams is the server: "bulk" streams get endless data, "small"
// streams echo fixed-size requests.
func serveStreams(s wiretransport.Session) {
	defer s.Close()
	buf := make([]byte, chunk)
	for {
		st, err := s.Accept(context.Background())
		if err != nil {
			return
		}
		go func() {
			defer st.Close()
			switch st.Service() {
			case "bulk":
				for {
					if _, err := st.Write(buf); err != nil {
						return
					}
				}
			case "small":
				b := make([]byte, smallSize)
				for {
					if _, err := io.ReadFull(st, b); err != nil {
						return
					}
					if _, err := st.Write(b); err != nil {
						return
					}
				}
			default:
				st.Reset(wire.CodeNoSuchService) //nolint:errcheck // never fails
			}
		}()
	}
}

func startServer(l *link, srvTLS *tls.Config) (func(), error) {
	var (
		ln, lowat net.Listener
		pc        net.PacketConn
		err       error
	)
	if e := inNS(l.ns[1], func() {
		if ln, err = net.Listen("tcp", l.addr[1]+":7900"); err != nil {
			return
		}
		if lowat, err = net.Listen("tcp", l.addr[1]+":7902"); err != nil {
			return
		}
		pc, err = net.ListenPacket("udp", l.addr[1]+":7901")
	}); e != nil {
		return nil, e
	}
	if err != nil {
		return nil, err
	}
	ql, err := wiretransport.ListenQUICConn(pc, srvTLS, wire.Config{})
	if err != nil {
		return nil, err
	}
	for _, ln := range []net.Listener{ln, lowat} {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				if ln == lowat {
					setLowat(c)
				}
				go func() {
					s, err := wire.Server(tls.Server(c, srvTLS), wire.Config{})
					if err == nil {
						serveStreams(wiretransport.Wrap(s))
					}
				}()
			}
		}()
	}
	go func() {
		for {
			c, err := ql.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				s, err := wiretransport.ServeQUIC(context.Background(), c, wire.Config{})
				if err == nil {
					serveStreams(s)
				}
			}()
		}
	}()
	return func() { ln.Close(); lowat.Close(); ql.CloseAll(); pc.Close() }, nil
}

// setLowat keeps at most lowatBytes of unsent data in the kernel's send
// buffer (TCP_NOTSENT_LOWAT), so a small frame written after bulk data
// waits behind little of it.
func setLowat(c net.Conn) {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) { //nolint:errcheck // best effort
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, lowatBytes) //nolint:errcheck // best effort
	})
}

const lowatBytes = 16 << 10

// variant is one transport setup under test.
type variant struct {
	name string
	kind wiretransport.Kind
	port string
}

var variants = []variant{
	{"tcp+tls", wiretransport.TLS, "7900"},
	{"tcp+lowat", wiretransport.TLS, "7902"},
	{"quic", wiretransport.QUIC, "7901"},
}

// trial is one measurement.
type trial struct {
	goodput          float64 // bulk Mbit/s
	p50, p99, maxLat time.Duration
	exchanges        int
}

func dialSession(ctx context.Context, l *link, v variant, cliTLS *tls.Config) (wiretransport.Session, error) {
	var (
		s   wiretransport.Session
		err error
	)
	o := wiretransport.DialOptions{TLS: cliTLS, Timeout: 15 * time.Second}
	var e error
	ep := wiretransport.Endpoint{Kind: v.kind, Host: l.addr[1] + ":" + v.port}
	switch v.kind {
	case wiretransport.TLS:
		o.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			var derr error
			if err := inNS(l.ns[0], func() { var d net.Dialer; c, derr = d.DialContext(ctx, network, addr) }); err != nil {
				return nil, err
			}
			return c, derr
		}
		s, err = wiretransport.Dial(ctx, ep, o)
	case wiretransport.QUIC:
		// quic-go opens its UDP socket in the calling thread's namespace.
		e = inNS(l.ns[0], func() {
			s, err = wiretransport.Dial(ctx, ep, o)
		})
	}
	if e != nil {
		return nil, e
	}
	return s, err
}

func runTrial(ctx context.Context, l *link, v variant, cliTLS *tls.Config, d time.Duration) (trial, error) {
	s, err := dialSession(ctx, l, v, cliTLS)
	if err != nil {
		return trial{}, err
	}
	defer s.Close()
	var bulk atomic.Int64
	var wg sync.WaitGroup
	octx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var streams []wiretransport.Stream
	defer func() {
		for _, st := range streams {
			st.Reset(wire.CodeCancel) //nolint:errcheck // never fails
		}
		wg.Wait()
	}()
	for range bulkStreams {
		st, err := s.Open(octx, "bulk")
		if err != nil {
			return trial{}, err
		}
		streams = append(streams, st)
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunk)
			for {
				n, err := st.Read(buf)
				bulk.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
	small, err := s.Open(octx, "small")
	if err != nil {
		return trial{}, err
	}
	streams = append(streams, small)
	req, resp := make([]byte, smallSize), make([]byte, smallSize)
	exchange := func() (time.Duration, error) {
		small.SetDeadline(time.Now().Add(30 * time.Second))
		start := time.Now()
		if _, err := small.Write(req); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(small, resp); err != nil {
			return 0, err
		}
		return time.Since(start), nil
	}
	warm := time.Now().Add(time.Second)
	for time.Now().Before(warm) {
		if _, err := exchange(); err != nil {
			return trial{}, fmt.Errorf("warm-up exchange: %w", err)
		}
	}
	var lats []time.Duration
	b0, t0 := bulk.Load(), time.Now()
	end := t0.Add(d)
	for time.Now().Before(end) {
		lat, err := exchange()
		if err != nil {
			return trial{}, fmt.Errorf("exchange: %w", err)
		}
		lats = append(lats, lat)
	}
	el := time.Since(t0)
	b1 := bulk.Load()
	if len(lats) == 0 {
		return trial{}, errors.New("no exchange completed")
	}
	slices.Sort(lats)
	q := func(p float64) time.Duration { return lats[min(len(lats)-1, int(p*float64(len(lats))))] }
	return trial{goodput: float64(b1-b0) * 8 / el.Seconds() / 1e6, p50: q(0.50), p99: q(0.99), maxLat: lats[len(lats)-1], exchanges: len(lats)}, nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

func run(ctx context.Context, rounds int, d time.Duration, losses []float64, rate string, queue time.Duration) error {
	l, cleanup, err := newLink(rate, queue)
	if err != nil {
		return err
	}
	defer cleanup()
	srvTLS, cliTLS, err := selfSigned()
	if err != nil {
		return err
	}
	stopServer, err := startServer(l, srvTLS)
	if err != nil {
		return err
	}
	defer stopServer()
	fmt.Printf("link: veth between two namespaces, tbf rate %s and queue up to %v on each end; loss = nftables numgen drop of incoming packets on both ends\n", rate, queue)
	fmt.Printf("per trial: one session, %d bulk download streams + 1 stream of %d-byte request/response back to back, %v measured\n\n", bulkStreams, smallSize, d)
	fmt.Printf("%-5s %-5s %-9s %10s %9s %9s %9s %7s\n", "round", "loss", "transport", "goodput", "p50 ms", "p99 ms", "max ms", "exch")
	type key struct {
		loss float64
		v    string
	}
	all := map[key][]trial{}
	for r := 1; r <= rounds; r++ {
		for _, loss := range losses {
			if err := l.setLoss(loss); err != nil {
				return err
			}
			// Rotate the order from round to round so drift favours none.
			order := append(slices.Clone(variants[r%len(variants):]), variants[:r%len(variants)]...)
			for _, v := range order {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				tr, err := runTrial(ctx, l, v, cliTLS, d)
				if err != nil {
					return fmt.Errorf("round %d, loss %v%%, %s: %w", r, loss, v.name, err)
				}
				all[key{loss, v.name}] = append(all[key{loss, v.name}], tr)
				fmt.Printf("%-5d %-5s %-9s %6.1f Mb/s %9s %9s %9s %7d\n", r, fmt.Sprintf("%g%%", loss), v.name, tr.goodput, ms(tr.p50), ms(tr.p99), ms(tr.maxLat), tr.exchanges)
			}
		}
	}
	fmt.Printf("\nmedians over %d rounds; ratio = variant / quic\n", rounds)
	fmt.Printf("%-5s %-9s %20s %20s %20s\n", "loss", "transport", "goodput Mb/s", "p50 ms", "p99 ms")
	med := func(ts []trial, f func(trial) float64) float64 {
		v := make([]float64, len(ts))
		for i, t := range ts {
			v[i] = f(t)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	metrics := []func(trial) float64{
		func(t trial) float64 { return t.goodput },
		func(t trial) float64 { return float64(t.p50.Microseconds()) / 1000 },
		func(t trial) float64 { return float64(t.p99.Microseconds()) / 1000 },
	}
	for _, loss := range losses {
		quic := all[key{loss, "quic"}]
		for _, v := range variants {
			ts := all[key{loss, v.name}]
			line := fmt.Sprintf("%-5s %-9s", fmt.Sprintf("%g%%", loss), v.name)
			for _, f := range metrics {
				a, b := med(ts, f), med(quic, f)
				line += fmt.Sprintf(" %11.1f (%5.2fx)", a, a/b)
			}
			fmt.Println(line)
		}
	}
	return nil
}
