package prober

import (
	"context"
	"hash/fnv"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// MemberService is the registry service every prober registers itself
// under, so that the probers find each other and share the work.
const MemberService = "switchboard-prober"

// members is the set of live probers, as the registry last showed it,
// and this prober's share of the work: each key (a health check, a
// scheduled job) belongs to the member whose hash of (id, key) is highest
// (rendezvous hashing), so every prober computes the same owner without a
// leader, and a member's death moves only its own keys.
//
// This prober counts only while the registry shows it passing: one whose
// heartbeats were late (and whose share the others took) or that is not
// registered yet runs nothing, so a check never runs on both. When no
// prober is passing at all (it cannot register: say its token may not
// write switchboard-prober), it runs everything, so that someone does.
// Until the registry's first snapshot (known false), only a start-up cache
// may be run from; while the registry is lost the last set stays, as the
// other probers' does.
type members struct {
	self string

	mu      sync.Mutex
	live    []string // sorted, self included
	known   bool
	changed chan struct{} // closed and replaced when live changes
}

func newMembers(self string) *members {
	return &members{self: self, live: []string{self}, changed: make(chan struct{})}
}

// set installs the passing probers' ids (just self when there is none).
func (m *members) set(ids []string) {
	ids = slices.Clone(ids)
	if len(ids) == 0 {
		ids = []string{m.self}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.known && slices.Equal(ids, m.live) {
		return
	}
	m.live, m.known = ids, true
	close(m.changed)
	m.changed = make(chan struct{})
}

// snapshot returns the live set, whether it came from the registry, and
// the channel closed at its next change.
func (m *members) snapshot() ([]string, bool, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.live, m.known, m.changed
}

// owner returns the member that owns key.
func (m *members) owner(key string) string {
	live, _, _ := m.snapshot()
	return ownerOf(live, key)
}

// owns reports whether this prober owns key.
func (m *members) owns(key string) bool { return m.owner(key) == m.self }

// ownerOf is rendezvous (highest random weight) hashing: the member with
// the highest score for key.
func ownerOf(live []string, key string) string {
	best, bestScore := "", uint64(0)
	for _, id := range live {
		if s := score(id, key); best == "" || s > bestScore || s == bestScore && id < best {
			best, bestScore = id, s
		}
	}
	return best
}

// score hashes (id, key) with FNV-1a and a 64-bit finalizer (so that
// similar ids spread well).
func score(id, key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write([]byte(key))
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// Keys of the work the probers share.
func healthKey(service, id string) string { return "health/" + service + "/" + id }
func jobKey(id string) string             { return "job/" + id }

// liveProbers returns the ids of the passing prober instances of a
// registry snapshot.
func liveProbers(insts []*registryv1.Instance) []string {
	var ids []string
	for _, in := range insts {
		if in.GetService() == MemberService && (in.GetHealth() == registryv1.HealthStatus_HEALTH_STATUS_PASSING || in.GetHealth() == registryv1.HealthStatus_HEALTH_STATUS_WARNING) {
			ids = append(ids, in.GetId())
		}
	}
	return ids
}

// defaultID is a prober id from its name and gRPC port: stable across
// restarts of one prober, distinct for two on one host.
func defaultID(name, grpcAddr string) string {
	var b strings.Builder
	for _, c := range name {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	id := b.String()
	if id == "" {
		id = "prober"
	}
	if _, port, err := net.SplitHostPort(grpcAddr); err == nil {
		id += "-" + port
	}
	return id[:min(len(id), 64)]
}

// memberRegistry is the part of the registry a prober's membership uses.
type memberRegistry interface {
	Register(ctx context.Context, in *registryv1.RegisterRequest, opts ...grpc.CallOption) (*registryv1.RegisterResponse, error)
	Heartbeat(ctx context.Context, in *registryv1.HeartbeatRequest, opts ...grpc.CallOption) (*registryv1.HeartbeatResponse, error)
	Deregister(ctx context.Context, in *registryv1.DeregisterRequest, opts ...grpc.CallOption) (*registryv1.DeregisterResponse, error)
}

// membership keeps this prober registered as an instance of MemberService
// with a TTL check of ttl: it heartbeats three times per TTL (registering
// again whenever the registry does not know it) until ctx ends; leave
// deregisters it at shutdown, so the others take its share at once.
type membership struct {
	reg  memberRegistry
	inst *registryv1.Instance
	ttl  time.Duration
	log  *slog.Logger
	done chan struct{} // closed when run returns
}

func newMembership(reg memberRegistry, id, grpcAddr string, ttl time.Duration, log *slog.Logger) *membership {
	host, portStr, _ := net.SplitHostPort(grpcAddr)
	port, _ := strconv.Atoi(portStr)
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		// Listening on every address: the host's name is how others
		// reach it (a container's name on a compose network).
		host = "127.0.0.1"
		if h, err := os.Hostname(); err == nil && h != "" {
			host = h
		}
	}
	return &membership{reg: reg, ttl: ttl, log: log, done: make(chan struct{}), inst: &registryv1.Instance{
		Service: MemberService, Id: id, Address: host, Port: uint32(port),
		Check: &registryv1.HealthCheck{Kind: registryv1.CheckKind_CHECK_KIND_TTL, Interval: durationpb.New(ttl)},
	}}
}

// run keeps the registration alive until ctx ends; then closes done.
func (m *membership) run(ctx context.Context) error {
	defer close(m.done)
	every := max(m.ttl/3, 50*time.Millisecond)
	registered := false
	for {
		// Up to half the TTL per call: a slow registry answer is still in
		// time, and the next call comes a third of the TTL after this one.
		cctx, cancel := context.WithTimeout(ctx, m.ttl/2)
		var err error
		if registered {
			_, err = m.reg.Heartbeat(cctx, &registryv1.HeartbeatRequest{Service: MemberService, Id: m.inst.Id})
			if status.Code(err) == codes.NotFound || status.Code(err) == codes.FailedPrecondition {
				registered = false // the registry lost it: register again
			}
		}
		if !registered {
			if _, err = m.reg.Register(cctx, &registryv1.RegisterRequest{Instance: m.inst}); err == nil {
				registered = true
				m.log.Info("registered as a prober instance: sharing health checks and jobs with the other probers", "service", MemberService, "id", m.inst.Id, "ttl", m.ttl)
			}
		}
		cancel()
		if err != nil && ctx.Err() == nil {
			m.log.Debug("prober membership", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

// leave deregisters this prober once run has returned (a shutdown hook:
// it runs before the registry connection closes).
func (m *membership) leave(ctx context.Context) error {
	select {
	case <-m.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := m.reg.Deregister(dctx, &registryv1.DeregisterRequest{Service: MemberService, Id: m.inst.Id}); err != nil {
		m.log.Warn("prober deregistration failed: its share moves when its TTL passes", "ttl", m.ttl, "err", err)
		return nil
	}
	m.log.Info("deregistered: the other probers take this one's share", "id", m.inst.Id)
	return nil
}
