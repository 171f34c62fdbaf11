package service

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/switchboard-net/switchboard/pkg/telemetry"
	"github.com/switchboard-net/switchboard/pkg/watch"
)

// DefaultCallTimeout bounds a unary call whose context has no deadline.
const DefaultCallTimeout = 10 * time.Second

// Dial returns a client connection to another service at target (host:port
// or any gRPC target), over TLS with this service's certificate when
// --tls-cert/--tls-ca are set and with its --token. Calls carry the caller's trace context, are traced
// with this service's provider, and unary calls without a deadline get
// DefaultCallTimeout.
func (rt *Runtime) Dial(target string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	base := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(
			otelgrpc.WithTracerProvider(rt.Tracing.Provider),
			otelgrpc.WithPropagators(telemetry.Propagator()),
		)),
		grpc.WithChainUnaryInterceptor(defaultDeadline),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// Services watch each other: reconnect on the watch's short,
		// jittered back-off, not gRPC's (which grows to two minutes).
		watch.DialOption(),
	}
	base = append(base, rt.dialCreds(target)...)
	cc, err := grpc.NewClient(target, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return cc, nil
}

func defaultDeadline(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultCallTimeout)
		defer cancel()
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}
