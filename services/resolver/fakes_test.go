package resolver

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// fakeRegistry is an in-memory registry: Watch and WatchRecords send the
// whole set at once and after every change.
type fakeRegistry struct {
	registryv1.UnimplementedRegistryServer
	mu        sync.Mutex
	index     uint64
	instances map[string]*registryv1.Instance // service/id
	records   []*registryv1.Record
	changed   chan struct{} // closed and replaced on every change
}

func startFakeRegistry(t *testing.T) (*fakeRegistry, string) {
	t.Helper()
	f := &fakeRegistry{instances: map[string]*registryv1.Instance{}, changed: make(chan struct{}), index: 1}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	registryv1.RegisterRegistryServer(srv, f)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return f, ln.Addr().String()
}

func (f *fakeRegistry) bumpLocked() {
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
}

// put registers (or replaces) an instance.
func (f *fakeRegistry) put(in *registryv1.Instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.instances[in.Service+"/"+in.Id] = in
	f.bumpLocked()
}

// remove deregisters an instance.
func (f *fakeRegistry) remove(service, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.instances, service+"/"+id)
	f.bumpLocked()
}

func (f *fakeRegistry) Watch(req *registryv1.WatchRequest, stream grpc.ServerStreamingServer[registryv1.WatchResponse]) error {
	var last uint64
	for {
		f.mu.Lock()
		ch, idx := f.changed, f.index
		var ins []*registryv1.Instance
		for _, in := range f.instances {
			ins = append(ins, in)
		}
		f.mu.Unlock()
		if idx > last {
			if err := stream.Send(&registryv1.WatchResponse{Index: idx, Instances: ins, Snapshot: req.GetIncremental()}); err != nil {
				return err
			}
			last = idx
		}
		select {
		case <-ch:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

func (f *fakeRegistry) WatchRecords(req *registryv1.WatchRecordsRequest, stream grpc.ServerStreamingServer[registryv1.WatchRecordsResponse]) error {
	var last uint64
	for {
		f.mu.Lock()
		ch, idx := f.changed, f.index
		recs := slices.Clone(f.records)
		f.mu.Unlock()
		if idx > last {
			if err := stream.Send(&registryv1.WatchRecordsResponse{Index: idx, Records: recs}); err != nil {
				return err
			}
			last = idx
		}
		select {
		case <-ch:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

func (f *fakeRegistry) PutRecord(_ context.Context, req *registryv1.PutRecordRequest) (*registryv1.PutRecordResponse, error) {
	r := req.GetRecord()
	if r.GetName() == "" || r.GetType() == "" || r.GetData() == "" {
		return nil, status.Error(codes.InvalidArgument, "record: name, type and data are required")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.records = slices.DeleteFunc(f.records, func(x *registryv1.Record) bool {
		return x.Name == r.Name && x.Type == r.Type && x.Data == r.Data
	})
	f.records = append(f.records, r)
	f.bumpLocked()
	return &registryv1.PutRecordResponse{Record: r}, nil
}

func (f *fakeRegistry) DeleteRecord(_ context.Context, req *registryv1.DeleteRecordRequest) (*registryv1.DeleteRecordResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.records)
	f.records = slices.DeleteFunc(f.records, func(x *registryv1.Record) bool {
		return x.Name == req.Name && x.Type == req.Type && (req.Data == "" || x.Data == req.Data)
	})
	f.bumpLocked()
	return &registryv1.DeleteRecordResponse{Deleted: uint32(n - len(f.records))}, nil
}

// fakeUpstream is a recursive resolver stand-in on loopback UDP and TCP:
// it answers from a table and counts queries.
type fakeUpstream struct {
	addr    string
	queries atomic.Int64
	delay   atomic.Int64 // nanoseconds before each answer
	mu      sync.Mutex
	answers map[string]func(q dns.Question, m *dns.Msg) // key: lower name + "/" + type
}

func startFakeUpstream(t *testing.T) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{answers: map[string]func(dns.Question, *dns.Msg){}}
	pcs, ln, err := listenDNS("127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	pc := pcs[0]
	u.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		u.queries.Add(1)
		time.Sleep(time.Duration(u.delay.Load()))
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		q := r.Question[0]
		u.mu.Lock()
		fn := u.answers[strings.ToLower(q.Name)+"/"+dns.TypeToString[q.Qtype]]
		u.mu.Unlock()
		if fn == nil {
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{mustRR("upstream.test. 3600 IN SOA ns.upstream.test. h.upstream.test. 1 3600 600 86400 30")}
		} else {
			fn(q, m)
		}
		_ = w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go func() { _ = srv.ActivateAndServe() }()
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return u
}

// set makes the upstream answer name/type with the given records.
func (u *fakeUpstream) set(name, typ string, rrs ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.answers[strings.ToLower(name)+"/"+typ] = func(_ dns.Question, m *dns.Msg) {
		for _, s := range rrs {
			m.Answer = append(m.Answer, mustRR(s))
		}
	}
}

// deadUpstream is a UDP and TCP address that never answers.
func deadUpstream(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

func mustRR(s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return rr
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ok, info := cond()
		if ok {
			return
		}
		last = info
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within 10s; last: %s", what, last)
}

// spoofUpstream is an upstream on a UDP and a TCP socket (one port) whose
// replies the test scripts: for each query, script returns the messages to
// send, in order, from the upstream's own address and port — forged
// replies as an attacker who guessed the port would send them, then
// (usually) the real one.
type spoofUpstream struct {
	addr    string
	queries atomic.Int64
	mu      sync.Mutex
	names   []string // question names as received
}

func startSpoofUpstream(t *testing.T, script func(network string, q *dns.Msg) [][]byte) *spoofUpstream {
	t.Helper()
	pcs, ln, err := listenDNS("127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	pc := pcs[0]
	u := &spoofUpstream{addr: pc.LocalAddr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = pc.Close()
		_ = ln.Close()
		wg.Wait()
	})
	seen := func(q *dns.Msg) {
		u.queries.Add(1)
		u.mu.Lock()
		defer u.mu.Unlock()
		if len(q.Question) > 0 {
			u.names = append(u.names, q.Question[0].Name)
		}
	}
	wg.Go(func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf) // ends when cleanup closes pc
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			seen(q)
			for _, b := range script("udp", q) {
				_ = pc.SetWriteDeadline(time.Now().Add(5 * time.Second))
				_, _ = pc.WriteTo(b, from)
			}
		}
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept() // ends when cleanup closes ln
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				co := &dns.Conn{Conn: c}
				q, err := co.ReadMsg()
				if err != nil {
					return
				}
				seen(q)
				for _, b := range script("tcp", q) {
					if _, err := co.Write(b); err != nil {
						return
					}
				}
			})
		}
	})
	return u
}

// sentNames returns the question names the upstream received.
func (u *spoofUpstream) sentNames() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.names)
}

// answerA packs the reply to q with one A record for its question name,
// after edit (nil: none) had a chance to change it.
func answerA(q *dns.Msg, ip string, edit func(m *dns.Msg)) []byte {
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	m.Answer = []dns.RR{mustRR(q.Question[0].Name + " 300 IN A " + ip)}
	if edit != nil {
		edit(m)
	}
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}
