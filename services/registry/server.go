package registry

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchboard-net/switchboard/pkg/access"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
)

// Server implements switchboard.registry.v1.Registry over a Store.
type Server struct {
	registryv1.UnimplementedRegistryServer
	store   Store
	metrics *Metrics
	now     func() time.Time
}

// NewServer returns a Registry server over store. m may be nil.
func NewServer(store Store, m *Metrics) *Server {
	if m == nil {
		m = newMetrics("")
	}
	return &Server{store: store, metrics: m, now: time.Now}
}

var _ registryv1.RegistryServer = (*Server)(nil)

// toStatus maps store and validation errors to gRPC status errors.
func (s *Server) toStatus(op string, err error) error {
	if err == nil {
		return nil
	}
	var fe *catalog.FieldError
	switch {
	case errors.As(err, &fe):
		return status.Error(codes.InvalidArgument, fe.Error())
	case errors.Is(err, catalog.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, catalog.ErrFailedPrecondition):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	s.metrics.backendErrors.WithLabelValues(op).Inc()
	if errors.Is(err, catalog.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func validateRef(service, id string) error {
	if err := catalog.ValidateServiceName("service", service); err != nil {
		return err
	}
	return catalog.ValidateID("id", id)
}

// Register adds or replaces an instance.
func (s *Server) Register(ctx context.Context, req *registryv1.RegisterRequest) (*registryv1.RegisterResponse, error) {
	inst, err := catalog.Prepare(req.GetInstance(), s.now())
	if err != nil {
		return nil, s.toStatus("register", err)
	}
	delete(inst.Metadata, RegisteredByKey)
	if c := access.CallerFrom(ctx); c != nil {
		if inst.Metadata == nil {
			inst.Metadata = map[string]string{}
		}
		inst.Metadata[RegisteredByKey] = c.String()
	}
	stored, err := s.store.Register(ctx, inst)
	if err != nil {
		return nil, s.toStatus("register", err)
	}
	s.metrics.ops.WithLabelValues("register").Inc()
	return &registryv1.RegisterResponse{Instance: stored}, nil
}

// Deregister removes an instance.
func (s *Server) Deregister(ctx context.Context, req *registryv1.DeregisterRequest) (*registryv1.DeregisterResponse, error) {
	if err := validateRef(req.GetService(), req.GetId()); err != nil {
		return nil, s.toStatus("deregister", err)
	}
	if err := s.store.Deregister(ctx, req.GetService(), req.GetId()); err != nil {
		return nil, s.toStatus("deregister", err)
	}
	s.metrics.ops.WithLabelValues("deregister").Inc()
	return &registryv1.DeregisterResponse{}, nil
}

// Heartbeat keeps an instance with a TTL check passing.
func (s *Server) Heartbeat(ctx context.Context, req *registryv1.HeartbeatRequest) (*registryv1.HeartbeatResponse, error) {
	if err := validateRef(req.GetService(), req.GetId()); err != nil {
		return nil, s.toStatus("heartbeat", err)
	}
	if err := s.store.Heartbeat(ctx, req.GetService(), req.GetId()); err != nil {
		return nil, s.toStatus("heartbeat", err)
	}
	s.metrics.ops.WithLabelValues("heartbeat").Inc()
	return &registryv1.HeartbeatResponse{}, nil
}

// SetHealth records a check result.
func (s *Server) SetHealth(ctx context.Context, req *registryv1.SetHealthRequest) (*registryv1.SetHealthResponse, error) {
	if err := validateRef(req.GetService(), req.GetId()); err != nil {
		return nil, s.toStatus("set_health", err)
	}
	if err := catalog.ValidateHealth(req.GetStatus(), req.GetOutput()); err != nil {
		return nil, s.toStatus("set_health", err)
	}
	if err := s.store.SetHealth(ctx, req.GetService(), req.GetId(), req.GetStatus(), req.GetOutput()); err != nil {
		return nil, s.toStatus("set_health", err)
	}
	s.metrics.ops.WithLabelValues("set_health").Inc()
	return &registryv1.SetHealthResponse{}, nil
}

func filter(insts []*registryv1.Instance, all bool) []*registryv1.Instance {
	if all {
		return insts
	}
	out := make([]*registryv1.Instance, 0, len(insts))
	for _, in := range insts {
		if catalog.Healthy(in.Health) {
			out = append(out, in)
		}
	}
	return out
}

// GetService returns a service's instances; an unknown service has none.
func (s *Server) GetService(_ context.Context, req *registryv1.GetServiceRequest) (*registryv1.GetServiceResponse, error) {
	if err := catalog.ValidateServiceName("service", req.GetService()); err != nil {
		return nil, s.toStatus("get_service", err)
	}
	idx, insts := s.store.Snapshot().Service(req.GetService())
	return &registryv1.GetServiceResponse{Instances: filter(insts, req.GetIncludeUnhealthy()), Index: idx}, nil
}

// ListServices returns every service with instance counts.
func (s *Server) ListServices(ctx context.Context, _ *registryv1.ListServicesRequest) (*registryv1.ListServicesResponse, error) {
	snap := s.store.Snapshot()
	idx, _ := snap.All()
	resp := &registryv1.ListServicesResponse{Index: idx}
	for _, name := range snap.ServiceNames() {
		if !access.Allowed(ctx, access.Service(name, access.Read)) {
			continue
		}
		_, insts := snap.Service(name)
		sum := &registryv1.ServiceSummary{Name: name, Instances: uint32(len(insts))}
		seen := map[string]bool{}
		for _, in := range insts {
			if catalog.Healthy(in.Health) {
				sum.Passing++
			}
			for _, tag := range in.Tags {
				if !seen[tag] {
					seen[tag] = true
					sum.Tags = append(sum.Tags, tag)
				}
			}
		}
		sortStrings(sum.Tags)
		resp.Services = append(resp.Services, sum)
	}
	return resp, nil
}

// Watch streams snapshots of one service (or all) whenever they change. The
// first snapshot goes out at once when after_index is 0 (or newer than
// anything this registry has: the caller saw an earlier run); after that,
// every snapshot with a higher index, and every change of staleness. With
// incremental set, the later ones are the changes only, and every
// snapshot or update goes out in parts of at most about 256 KiB (see
// instanceWatch).
func (s *Server) Watch(req *registryv1.WatchRequest, stream registryv1.Registry_WatchServer) error {
	name := req.GetService()
	if name != "" {
		if err := catalog.ValidateServiceName("service", name); err != nil {
			return s.toStatus("watch", err)
		}
	}
	s.metrics.watches.WithLabelValues("instances").Inc()
	defer s.metrics.watches.WithLabelValues("instances").Dec()
	pick := func(snap *catalog.Snapshot) (uint64, []*registryv1.Instance) {
		if name == "" {
			return snap.All()
		}
		return snap.Service(name)
	}
	if req.GetIncremental() {
		w := &instanceWatch{service: name, all: req.GetIncludeUnhealthy(), send: stream.Send,
			resets: func() { s.metrics.watchResets.Inc() }}
		return w.run(stream.Context(), s.store.Snapshot, req.GetAfterIndex())
	}
	return watchLoop(stream.Context(), s.store.Snapshot, req.GetAfterIndex(), pick, func(idx uint64, insts []*registryv1.Instance, stale bool) error {
		resp := &registryv1.WatchResponse{Index: idx, Instances: filter(insts, req.GetIncludeUnhealthy()), Stale: stale}
		if err := checkWholeSnapshot(resp); err != nil {
			return err
		}
		return stream.Send(resp)
	})
}

// watchLoop is the shared loop of Watch and WatchRecords: wait on the
// current snapshot's Changed channel, pick the watched part, send it when
// its index passed the last one sent or its staleness changed.
func watchLoop[T any](ctx context.Context, current func() *catalog.Snapshot, after uint64,
	pick func(*catalog.Snapshot) (uint64, T), send func(uint64, T, bool) error) error {
	snap := current()
	if after > snap.Index() {
		after = 0 // an index from an earlier run of the registry
	}
	force := after == 0
	lastStale := false
	for {
		idx, v := pick(snap)
		if force || idx > after || snap.Stale() != lastStale {
			if err := send(idx, v, snap.Stale()); err != nil {
				return err
			}
			force = false
			after = max(after, idx)
			lastStale = snap.Stale()
		}
		select {
		case <-snap.Changed():
			snap = current()
		case <-ctx.Done():
			return nil
		}
	}
}

// PutRecord stores a static DNS record.
func (s *Server) PutRecord(ctx context.Context, req *registryv1.PutRecordRequest) (*registryv1.PutRecordResponse, error) {
	rec, err := catalog.PrepareRecord(req.GetRecord())
	if err != nil {
		return nil, s.toStatus("put_record", err)
	}
	if err := s.store.PutRecord(ctx, rec); err != nil {
		return nil, s.toStatus("put_record", err)
	}
	s.metrics.ops.WithLabelValues("put_record").Inc()
	return &registryv1.PutRecordResponse{Record: rec}, nil
}

// DeleteRecord removes records of a name and type.
func (s *Server) DeleteRecord(ctx context.Context, req *registryv1.DeleteRecordRequest) (*registryv1.DeleteRecordResponse, error) {
	name, typ, data, err := catalog.RecordRef(req.GetName(), req.GetType(), req.GetData())
	if err != nil {
		return nil, s.toStatus("delete_record", err)
	}
	n, err := s.store.DeleteRecord(ctx, name, typ, data)
	if err != nil {
		return nil, s.toStatus("delete_record", err)
	}
	s.metrics.ops.WithLabelValues("delete_record").Inc()
	return &registryv1.DeleteRecordResponse{Deleted: uint32(n)}, nil
}

// ListRecords lists records at or below a name.
func (s *Server) ListRecords(_ context.Context, req *registryv1.ListRecordsRequest) (*registryv1.ListRecordsResponse, error) {
	suffix := catalog.CanonicalName(req.GetSuffix())
	if suffix != "" {
		if err := catalog.ValidateDomain("suffix", suffix); err != nil {
			return nil, s.toStatus("list_records", err)
		}
	}
	_, recs := s.store.Snapshot().Records()
	return &registryv1.ListRecordsResponse{Records: recordsUnder(recs, suffix)}, nil
}

func recordsUnder(recs []*registryv1.Record, suffix string) []*registryv1.Record {
	if suffix == "" || suffix == "." {
		return recs
	}
	var out []*registryv1.Record
	for _, r := range recs {
		if r.Name == suffix || strings.HasSuffix(r.Name, "."+suffix) {
			out = append(out, r)
		}
	}
	return out
}

// WatchRecords streams the whole record set each time it changes.
func (s *Server) WatchRecords(req *registryv1.WatchRecordsRequest, stream registryv1.Registry_WatchRecordsServer) error {
	s.metrics.watches.WithLabelValues("records").Inc()
	defer s.metrics.watches.WithLabelValues("records").Dec()
	return watchLoop(stream.Context(), s.store.Snapshot, req.GetAfterIndex(),
		func(snap *catalog.Snapshot) (uint64, []*registryv1.Record) { return snap.Records() },
		func(idx uint64, recs []*registryv1.Record, stale bool) error {
			return stream.Send(&registryv1.WatchRecordsResponse{Index: idx, Records: recs, Stale: stale})
		})
}

// callerName is who makes the call, for updated_by ("" in-process).
func callerName(ctx context.Context) string {
	if c := access.CallerFrom(ctx); c != nil {
		return c.String()
	}
	return ""
}

// PutConfig stores a configuration entry (a balancer policy, a prober
// job).
func (s *Server) PutConfig(ctx context.Context, req *registryv1.PutConfigRequest) (*registryv1.PutConfigResponse, error) {
	e, err := catalog.PrepareConfig(req.GetEntry(), s.now(), callerName(ctx))
	if err != nil {
		return nil, s.toStatus("put_config", err)
	}
	if err := s.store.PutConfig(ctx, e); err != nil {
		return nil, s.toStatus("put_config", err)
	}
	s.metrics.ops.WithLabelValues("put_config").Inc()
	return &registryv1.PutConfigResponse{Entry: e}, nil
}

// DeleteConfig removes a configuration entry.
func (s *Server) DeleteConfig(ctx context.Context, req *registryv1.DeleteConfigRequest) (*registryv1.DeleteConfigResponse, error) {
	if err := catalog.ValidateConfigRef("kind", "key", req.GetKind(), req.GetKey()); err != nil {
		return nil, s.toStatus("delete_config", err)
	}
	if err := s.store.DeleteConfig(ctx, req.GetKind(), req.GetKey()); err != nil {
		return nil, s.toStatus("delete_config", err)
	}
	s.metrics.ops.WithLabelValues("delete_config").Inc()
	return &registryv1.DeleteConfigResponse{}, nil
}

// ListConfig lists the entries of one kind.
func (s *Server) ListConfig(_ context.Context, req *registryv1.ListConfigRequest) (*registryv1.ListConfigResponse, error) {
	if err := catalog.ValidateConfigKind("kind", req.GetKind()); err != nil {
		return nil, s.toStatus("list_config", err)
	}
	snap := s.store.Snapshot()
	idx, entries := snap.Config(req.GetKind())
	return &registryv1.ListConfigResponse{Entries: entries, Index: idx, Stale: snap.Stale()}, nil
}

// WatchConfig streams every entry of one kind each time the kind changes.
func (s *Server) WatchConfig(req *registryv1.WatchConfigRequest, stream registryv1.Registry_WatchConfigServer) error {
	kind := req.GetKind()
	if err := catalog.ValidateConfigKind("kind", kind); err != nil {
		return s.toStatus("watch_config", err)
	}
	s.metrics.watches.WithLabelValues("config").Inc()
	defer s.metrics.watches.WithLabelValues("config").Dec()
	return watchLoop(stream.Context(), s.store.Snapshot, req.GetAfterIndex(),
		func(snap *catalog.Snapshot) (uint64, []*registryv1.ConfigEntry) { return snap.Config(kind) },
		func(idx uint64, entries []*registryv1.ConfigEntry, stale bool) error {
			return stream.Send(&registryv1.WatchConfigResponse{Index: idx, Entries: entries, Stale: stale})
		})
}
