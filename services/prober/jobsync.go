package prober

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard-net/switchboard/pkg/watch"
	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// jobKind is the registry's configuration kind of scheduled jobs.
const jobKind = "job"

// jobWriteWait bounds a Schedule's or Unschedule's write to the registry
// and the wait for the watch to bring it back.
const jobWriteWait = 5 * time.Second

// jobRegistry is the part of the registry that keeps the scheduled jobs.
type jobRegistry interface {
	PutConfig(ctx context.Context, in *registryv1.PutConfigRequest, opts ...grpc.CallOption) (*registryv1.PutConfigResponse, error)
	DeleteConfig(ctx context.Context, in *registryv1.DeleteConfigRequest, opts ...grpc.CallOption) (*registryv1.DeleteConfigResponse, error)
	WatchConfig(ctx context.Context, in *registryv1.WatchConfigRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[registryv1.WatchConfigResponse], error)
}

// registryError is a job write the registry did not take; it maps to the
// registry's own status code (Unavailable when it cannot be reached).
type registryError struct{ err error }

func (e *registryError) Error() string { return "registry: " + e.err.Error() }
func (e *registryError) Unwrap() error { return e.err }

// GRPCStatus keeps the registry's code (PermissionDenied, Unavailable...).
func (e *registryError) GRPCStatus() *status.Status {
	st := status.Convert(e.err)
	code := st.Code()
	if code == codes.Unknown || code == codes.DeadlineExceeded || code == codes.Canceled {
		code = codes.Unavailable
	}
	return status.New(code, "storing the job in the registry: "+st.Message())
}

// put stores a validated job in the registry and waits until the watch
// brought it back, so that ListJobs on this prober shows it.
func (s *scheduler) put(ctx context.Context, j *proberv1.Job) (*proberv1.Job, error) {
	s.mu.Lock()
	_, replacing := s.jobs[j.GetId()]
	n := len(s.jobs)
	s.mu.Unlock()
	if !replacing && n >= maxJobs {
		return nil, bad("job", "at most %d scheduled jobs", maxJobs)
	}
	v, err := proto.Marshal(j)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, jobWriteWait)
	defer cancel()
	if _, err := s.reg.PutConfig(ctx, &registryv1.PutConfigRequest{Entry: &registryv1.ConfigEntry{Kind: jobKind, Key: j.GetId(), Value: v}}); err != nil {
		return nil, &registryError{err}
	}
	s.waitFor(ctx, func() bool {
		sj := s.jobs[j.GetId()]
		return sj != nil && proto.Equal(sj.job, j)
	})
	return j, nil
}

// delete removes a job from the registry and waits until the watch shows
// it gone.
func (s *scheduler) delete(ctx context.Context, id string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, jobWriteWait)
	defer cancel()
	if _, err := s.reg.DeleteConfig(ctx, &registryv1.DeleteConfigRequest{Kind: jobKind, Key: id}); err != nil {
		if status.Code(err) == codes.NotFound {
			return false, nil
		}
		return false, &registryError{err}
	}
	s.waitFor(ctx, func() bool { return s.jobs[id] == nil })
	return true, nil
}

// waitFor waits until ok (called with s.mu held) holds or ctx ends.
func (s *scheduler) waitFor(ctx context.Context, ok func() bool) {
	for {
		s.mu.Lock()
		done, wake := ok(), s.changed
		s.mu.Unlock()
		if done {
			return
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return
		}
	}
}

// follow applies the registry's job list until ctx ends, reconnecting
// with back-off.
func (s *scheduler) follow(ctx context.Context) {
	watch.Follow(ctx, watch.Stream(func(ctx context.Context) (watch.Receiver[*registryv1.WatchConfigResponse], error) {
		return s.reg.WatchConfig(ctx, &registryv1.WatchConfigRequest{Kind: jobKind})
	}, s.apply), func(error, time.Duration) {
		s.mu.Lock()
		s.stale = true
		s.mu.Unlock()
	}, watch.WithLogger(s.log, "registry jobs"))
}

// followMembers re-divides the jobs each time the live probers change.
func (s *scheduler) followMembers(ctx context.Context) {
	for {
		_, _, changed := s.members.snapshot()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		s.mu.Lock()
		s.reconcileLocked()
		s.saveCacheLocked()
		s.mu.Unlock()
	}
}

// apply installs the registry's job list: new and changed jobs replace
// the old (their results start afresh), removed jobs stop; then each
// prober runs its share. An entry that does not decode is skipped.
func (s *scheduler) apply(resp *registryv1.WatchConfigResponse) {
	next := make(map[string]*proberv1.Job, len(resp.GetEntries()))
	for _, e := range resp.GetEntries() {
		j := &proberv1.Job{}
		if err := proto.Unmarshal(e.GetValue(), j); err != nil || j.GetId() != e.GetKey() || validID(j.GetId()) != nil {
			s.log.Warn("registry job does not decode; skipped", "id", e.GetKey(), "err", errors.Join(err, fmt.Errorf("id %q", j.GetId())))
			continue
		}
		j.Runner = ""
		next[j.GetId()] = j
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, sj := range s.jobs {
		if j, ok := next[id]; ok && proto.Equal(stripRunner(sj.job), j) {
			sj.job = j
			continue
		}
		if sj.running {
			s.stopLocked(sj)
		}
		s.r.met.forget(id)
		delete(s.jobs, id)
	}
	for id, j := range next {
		if s.jobs[id] == nil {
			s.jobs[id] = &scheduled{job: j, ring: make([]*proberv1.JobResult, s.history)}
		}
	}
	s.synced, s.stale = true, resp.GetStale()
	s.reconcileLocked()
	s.saveCacheLocked()
	s.notifyLocked()
}

// saveCacheLocked writes the start-up cache (with each job's runner, so a
// prober that starts without the registry runs its last share only); a
// failure is logged: the jobs are in the registry. s.mu is held.
func (s *scheduler) saveCacheLocked() {
	if !s.synced {
		return
	}
	if err := s.saveLocked(); err != nil {
		s.log.Warn("job cache not written", "err", err)
	}
}

func stripRunner(j *proberv1.Job) *proberv1.Job {
	if j.GetRunner() == "" {
		return j
	}
	c := proto.Clone(j).(*proberv1.Job)
	c.Runner = ""
	return c
}
