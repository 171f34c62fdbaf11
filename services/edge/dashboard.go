package edge

import (
	"context"
	"crypto/subtle"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchboard-net/switchboard/pkg/dashboard"
	"github.com/switchboard-net/switchboard/pkg/service"
	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// startDashboard serves the live dashboard on the admin port (/dashboard):
// services and health from the registry, probe RTTs from the prober, and
// each backend's share of this edge's traffic.
func (e *Edge) startDashboard(rt *service.Runtime) error {
	var reg registryv1.RegistryClient
	var prober proberv1.ProberClient
	// Plain clients, not rt.Dial: an open page polls every 1.5 s, and
	// those reads are not worth a trace each. The dashboard bounds every
	// call with its own timeout.
	dial := func(addr string) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if e.cfg.RegistryAddr != "" {
		cc, err := dial(e.cfg.RegistryAddr)
		if err != nil {
			return err
		}
		rt.OnShutdown(func(context.Context) error { return cc.Close() })
		reg = registryv1.NewRegistryClient(cc)
	}
	if e.cfg.ProberAddr != "" {
		cc, err := dial(e.cfg.ProberAddr)
		if err != nil {
			return err
		}
		rt.OnShutdown(func(context.Context) error { return cc.Close() })
		prober = proberv1.NewProberClient(cc)
	}
	dashboard.Register(rt.Admin, dashboard.NewGRPCSource(reg, prober, e.backendStats))
	return nil
}

// backendStats reads the edge's own per-backend counters.
func (e *Edge) backendStats() []dashboard.BackendStat {
	bs := e.ups.backends("")
	out := make([]dashboard.BackendStat, 0, len(bs))
	for _, b := range bs {
		out = append(out, dashboard.BackendStat{Service: b.Service, ID: b.ID, Addr: b.Addr, Requests: b.Total})
	}
	return out
}

// errBadToken refuses a wire session whose HELLO token is wrong.
var errBadToken = errors.New("wrong or missing token")

// authenticate checks a wire client's token when --wire-token is set.
func (w *wireServer) authenticate(token []byte) error {
	want := w.e.cfg.WireToken
	if want == "" {
		return nil
	}
	if subtle.ConstantTimeCompare(token, []byte(want)) != 1 {
		return errBadToken
	}
	return nil
}
