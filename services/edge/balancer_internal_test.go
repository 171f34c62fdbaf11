package edge

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/switchboard-net/switchboard/pkg/netx"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
)

// flakyBalancer's WatchEndpoints fails down times (while the edge drops
// reports meanwhile), then streams one set and stays open.
type flakyBalancer struct {
	balancerv1.BalancerClient
	down  int
	calls atomic.Int32
	met   *metrics
}

func (f *flakyBalancer) WatchEndpoints(ctx context.Context, _ *balancerv1.WatchEndpointsRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[balancerv1.WatchEndpointsResponse], error) {
	n := int(f.calls.Add(1))
	if n > 1 {
		f.met.reportsDropped.Add(3) // reports lost since the last attempt
	}
	if n <= f.down {
		return nil, errors.New("connection refused")
	}
	set := &balancerv1.WatchEndpointsResponse{Service: "web", Endpoints: []*balancerv1.Endpoint{
		{Id: "a", Address: "127.0.0.1", Port: 1, Weight: 1, Healthy: true}}}
	return &oneSetStream{ctx: ctx, msgs: []*balancerv1.WatchEndpointsResponse{set}}, nil
}

type oneSetStream struct {
	grpc.ClientStream
	ctx  context.Context
	msgs []*balancerv1.WatchEndpointsResponse
}

func (s *oneSetStream) Recv() (*balancerv1.WatchEndpointsResponse, error) {
	if len(s.msgs) > 0 {
		m := s.msgs[0]
		s.msgs = s.msgs[1:]
		return m, nil
	}
	<-s.ctx.Done()
	return nil, s.ctx.Err()
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestBalancerOutageLoggedOnce: however many attempts fail while the
// balancer is away, the edge logs one WARN when the stream is lost and one
// when it resumes, the latter with the load reports dropped meanwhile.
func TestBalancerOutageLoggedOnce(t *testing.T) {
	for _, down := range []int{1, 4} {
		var logs syncBuffer
		met := newMetrics(nil)
		fb := &flakyBalancer{down: down, met: met}
		w := &watcher{client: fb, ups: newUpstreams(&netx.Dialer{}, 1, time.Second, met),
			log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})), changed: func() {},
			allowLocal: func(string) bool { return true }} // its endpoints are on loopback
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); w.run(ctx) }()
		deadline := time.Now().Add(20 * time.Second)
		for w.updates.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		<-done
		out := logs.String()
		if w.updates.Load() == 0 {
			t.Fatalf("down=%d: no set applied; log:\n%s", down, out)
		}
		var warns []string
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "level=WARN") {
				warns = append(warns, line)
			}
		}
		want := "reports_dropped=" + strconv.Itoa(3*down)
		if len(warns) != 2 || !strings.Contains(warns[0], "stale") ||
			!strings.Contains(warns[1], "balancer stream resumed") || !strings.Contains(warns[1], want) {
			t.Fatalf("down=%d: WARN lines %q, want one when lost and one when resumed with %s", down, warns, want)
		}
	}
}
