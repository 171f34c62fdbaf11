package service

import (
	"flag"
	"fmt"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/switchboard-net/switchboard/pkg/access"
)

// MaxMessageSize is the largest gRPC message any service sends or receives,
// on the server and on the client side alike: one constant, so a server
// never sends what its clients refuse.
const MaxMessageSize = 8 << 20

// limits bound the gRPC server: streams per connection (HTTP/2
// MAX_CONCURRENT_STREAMS) and long-lived streams (watches) per client and
// in all.
type limits struct {
	streamsPerConn   uint
	streams          int
	streamsPerClient int
}

func (l *limits) register(fs *flag.FlagSet) {
	fs.UintVar(&l.streamsPerConn, "max-streams-per-conn", 1024, "gRPC: most concurrent streams (calls) on one client connection (HTTP/2 MAX_CONCURRENT_STREAMS)")
	fs.IntVar(&l.streams, "max-watches", 8192, "gRPC: most open streaming calls (watches) in all; more are refused with RESOURCE_EXHAUSTED")
	fs.IntVar(&l.streamsPerClient, "max-watches-per-client", 512, "gRPC: most open streaming calls (watches) of one client (its token or certificate name, else its address); more are refused with RESOURCE_EXHAUSTED")
}

func (l *limits) check() error {
	switch {
	case l.streamsPerConn == 0:
		return fmt.Errorf("--max-streams-per-conn must be positive")
	case l.streams <= 0:
		return fmt.Errorf("--max-watches must be positive, got %d", l.streams)
	case l.streamsPerClient <= 0:
		return fmt.Errorf("--max-watches-per-client must be positive, got %d", l.streamsPerClient)
	}
	return nil
}

// streamGate counts the open streaming calls, in all and by client.
type streamGate struct {
	max, perClient int
	mu             sync.Mutex
	open           int
	byClient       map[string]int
}

func newStreamGate(l limits) *streamGate {
	return &streamGate{max: l.streams, perClient: l.streamsPerClient, byClient: map[string]int{}}
}

// intercept admits a streaming call within the bounds, or refuses it with
// ResourceExhausted. It runs after authentication, so the client is known
// by name when it presented a token or a certificate.
func (g *streamGate) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	client := streamClient(ss)
	g.mu.Lock()
	switch {
	case g.open >= g.max:
		g.mu.Unlock()
		return status.Errorf(codes.ResourceExhausted, "%s: this server has %d streams open, its limit (--max-watches); try again later", info.FullMethod, g.max)
	case g.byClient[client] >= g.perClient:
		g.mu.Unlock()
		return status.Errorf(codes.ResourceExhausted, "%s: %s has %d streams open, the limit per client (--max-watches-per-client)", info.FullMethod, client, g.perClient)
	}
	g.open++
	g.byClient[client]++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.open--
		if g.byClient[client]--; g.byClient[client] == 0 {
			delete(g.byClient, client)
		}
		g.mu.Unlock()
	}()
	return h(srv, ss)
}

// streamClient names the client of a stream: its identity when it has one,
// else its IP address.
func streamClient(ss grpc.ServerStream) string {
	ctx := ss.Context()
	if c := access.CallerFrom(ctx); c != nil && c.Via != "none" && c.Name != "" {
		return c.Name
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
			return host
		}
		return p.Addr.String()
	}
	return "unknown"
}
