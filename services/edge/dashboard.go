package edge

import (
	"context"
	"crypto/tls"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
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
	// call with its own timeout. They carry the service's TLS and token
	// all the same.
	dial := func(addr string) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr, dashboardCreds(rt.ClientTLS(addr), rt.Token())...)
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

// dashboardCreds are the dial options of the dashboard's clients: TLS with
// the service's certificate when it has one (plaintext otherwise), and its
// bearer token when it has one.
func dashboardCreds(tc *tls.Config, token string) []grpc.DialOption {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if tc != nil {
		opts[0] = grpc.WithTransportCredentials(credentials.NewTLS(tc))
	}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(token)))
	}
	return opts
}

// bearerToken sends "authorization: Bearer <token>" with every call.
type bearerToken string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: the
// token goes over plaintext too, as rt.Dial sends it (loopback stacks
// without TLS).
func (bearerToken) RequireTransportSecurity() bool { return false }
