package service_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
)

// TestWatchStreamLimits: streaming calls (here grpc.health.v1 Watch) beyond
// the limit per client, or in all, are refused with ResourceExhausted, and
// a closed stream frees its place.
func TestWatchStreamLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"per client", []string{"--max-watches-per-client=2"}},
		{"in all", []string{"--max-watches=2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := service.Spec{Name: "lim", Start: func(context.Context, *service.Runtime) error { return nil }}
			inst := servicetest.Start(t, spec, tc.args...)
			hc := healthpb.NewHealthClient(inst.Conn(t))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			open := func() (context.CancelFunc, error) {
				sctx, scancel := context.WithCancel(ctx)
				st, err := hc.Watch(sctx, &healthpb.HealthCheckRequest{})
				if err == nil {
					_, err = st.Recv() // the first status: the stream is open
				}
				if err != nil {
					scancel()
				}
				return scancel, err
			}
			first, err := open()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := open(); err != nil {
				t.Fatal(err)
			}
			if _, err := open(); status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("third stream: %v, want ResourceExhausted", err)
			}
			first()
			deadline := time.Now().Add(5 * time.Second)
			for {
				_, err := open()
				if err == nil {
					break
				}
				if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
					t.Fatalf("after closing one stream: %v", err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}
