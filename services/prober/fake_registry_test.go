package prober_test

import (
	"context"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// fakeRegistry is a small in-memory registry: Watch streams the whole
// catalog on every change; SetHealth records calls.
type fakeRegistry struct {
	registryv1.UnimplementedRegistryServer
	mu      sync.Mutex
	index   uint64
	insts   map[string]*registryv1.Instance
	changed chan struct{} // closed and replaced on each change
	sets    []*registryv1.SetHealthRequest
}

func startFakeRegistry(t *testing.T) (*fakeRegistry, string) {
	t.Helper()
	f := &fakeRegistry{insts: map[string]*registryv1.Instance{}, changed: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	registryv1.RegisterRegistryServer(s, f)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return f, ln.Addr().String()
}

func (f *fakeRegistry) put(in *registryv1.Instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.insts[in.Service+"/"+in.Id] = proto.Clone(in).(*registryv1.Instance)
	f.bumpLocked()
}

func (f *fakeRegistry) bumpLocked() {
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeRegistry) health(service, id string) registryv1.HealthStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.insts[service+"/"+id].GetHealth()
}

func (f *fakeRegistry) setCalls() []*registryv1.SetHealthRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*registryv1.SetHealthRequest(nil), f.sets...)
}

func (f *fakeRegistry) Watch(req *registryv1.WatchRequest, stream grpc.ServerStreamingServer[registryv1.WatchResponse]) error {
	for {
		f.mu.Lock()
		resp := &registryv1.WatchResponse{Index: f.index, Snapshot: req.GetIncremental()}
		for _, in := range f.insts {
			resp.Instances = append(resp.Instances, proto.Clone(in).(*registryv1.Instance))
		}
		ch := f.changed
		f.mu.Unlock()
		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (f *fakeRegistry) SetHealth(_ context.Context, req *registryv1.SetHealthRequest) (*registryv1.SetHealthResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	in := f.insts[req.Service+"/"+req.Id]
	if in == nil {
		return nil, status.Error(codes.NotFound, "no such instance")
	}
	f.sets = append(f.sets, proto.Clone(req).(*registryv1.SetHealthRequest))
	in.Health, in.HealthOutput = req.Status, req.Output
	f.bumpLocked()
	return &registryv1.SetHealthResponse{}, nil
}
