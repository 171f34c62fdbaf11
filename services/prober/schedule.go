package prober

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
)

// Bounds on scheduled jobs.
const (
	minInterval = time.Second
	maxInterval = 7 * 24 * time.Hour
	maxJobs     = 1000
)

// jobsFile is the scheduled jobs' file under --data-dir.
const jobsFile = "jobs.json"

func validID(id string) error {
	if len(id) < 1 || len(id) > 64 {
		return errors.New("must be 1-64 bytes")
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%q: only [A-Za-z0-9._-]", id)
		}
	}
	return nil
}

// scheduler runs periodic jobs and keeps a bounded ring of results per
// job.
//
// With a registry (reg set), the job list lives there (configuration kind
// "job"): Schedule and Unschedule write it, a watch brings every change to
// every prober, and each prober runs only the jobs it owns among the live
// probers (members); jobs.json is then a start-up cache of the registry's
// list. Without a registry the list is this prober's own, persisted in
// jobs.json.
type scheduler struct {
	r       *runner
	path    string // "" when not persisted
	history int
	log     *slog.Logger
	reg     jobRegistry // nil: the jobs are this prober's own
	members *members

	mu      sync.Mutex
	jobs    map[string]*scheduled
	ctx     context.Context // set by run; jobs start once it is
	wg      sync.WaitGroup
	started bool
	synced  bool          // the registry's job list arrived (registry mode)
	stale   bool          // the job watch is lost (registry mode)
	changed chan struct{} // closed and replaced when the job list changes
}

type scheduled struct {
	job     *proberv1.Job
	cancel  context.CancelFunc
	done    chan struct{}
	running bool

	mu   sync.Mutex
	ring []*proberv1.JobResult // oldest first after next
	next int
	full bool
}

func newScheduler(cfg *Config, r *runner, log *slog.Logger, reg jobRegistry, m *members) (*scheduler, error) {
	s := &scheduler{r: r, history: cfg.History, log: log, jobs: map[string]*scheduled{}, reg: reg, members: m, changed: make(chan struct{})}
	if cfg.DataDir == "" {
		log.Warn("no --data-dir: scheduled jobs are kept in memory only")
		return s, nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	s.path = filepath.Join(cfg.DataDir, jobsFile)
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read jobs: %w", err)
	}
	var stored proberv1.ListJobsResponse
	if err := protojson.Unmarshal(b, &stored); err != nil {
		return nil, fmt.Errorf("parse %s: %w", s.path, err)
	}
	for _, j := range stored.GetJobs() {
		if err := validID(j.GetId()); err != nil {
			log.Warn("skipping stored job", "id", j.GetId(), "err", err)
			continue
		}
		s.jobs[j.GetId()] = &scheduled{job: j, ring: make([]*proberv1.JobResult, s.history)}
	}
	if reg != nil {
		log.Info("loaded the start-up cache of scheduled jobs (stale until the registry's list arrives)", "count", len(s.jobs), "file", s.path)
		return s, nil
	}
	log.Info("loaded scheduled jobs", "count", len(s.jobs), "file", s.path)
	return s, nil
}

// run starts the jobs and waits for ctx to end, then stops them all.
func (s *scheduler) run(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	s.started = true
	s.reconcileLocked()
	s.mu.Unlock()
	if s.reg != nil {
		done := make(chan struct{})
		go func() { defer close(done); s.followMembers(ctx) }()
		s.follow(ctx)
		<-done
	}
	<-ctx.Done()
	s.wg.Wait()
	return nil
}

// mine reports whether this prober runs job id: every job without a
// registry; with one, the jobs it owns among the live probers, and (until
// the registry's list arrives) the cached jobs whose cached runner it is.
func (s *scheduler) mineLocked(sj *scheduled) bool {
	if s.reg == nil {
		return true
	}
	if _, known, _ := s.members.snapshot(); !known {
		return sj.job.GetRunner() == s.members.self
	}
	return s.members.owns(jobKey(sj.job.GetId()))
}

// reconcileLocked starts the jobs this prober runs and stops the others;
// s.mu is held.
func (s *scheduler) reconcileLocked() {
	if !s.started {
		return
	}
	for id, sj := range s.jobs {
		mine := s.mineLocked(sj)
		switch {
		case mine && !sj.running:
			s.log.Debug("running job", "id", id)
			s.startLocked(sj)
		case !mine && sj.running:
			s.log.Debug("job moved to another prober", "id", id, "runner", s.members.owner(jobKey(id)))
			s.stopLocked(sj)
		}
	}
}

// notifyLocked wakes the waiters on the job list; s.mu is held.
func (s *scheduler) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *scheduler) startLocked(sj *scheduled) {
	ctx, cancel := context.WithCancel(s.ctx)
	sj.cancel, sj.done, sj.running = cancel, make(chan struct{}), true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(sj.done)
		s.loop(ctx, sj)
	}()
}

// loop runs sj now and then every interval until ctx ends. Each run is
// prepared afresh: the allowlist (registered instances) may have changed.
func (s *scheduler) loop(ctx context.Context, sj *scheduled) {
	// apply may swap in an equal job (without its runner) under s.mu.
	s.mu.Lock()
	job := sj.job
	s.mu.Unlock()
	every := job.GetInterval().AsDuration()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, max(every, 2*time.Minute))
		var res *proberv1.JobResult
		j, err := s.r.prepare(rctx, job.GetSpec(), "spec")
		if err != nil {
			res = failed(err)
			res.JobId = job.GetId()
			s.r.met.observe(kindOf(job.GetSpec()), job.GetId(), res)
		} else {
			res = s.r.execute(rctx, j, job.GetId(), nil)
		}
		cancel()
		res.Prober = s.members.self
		if ctx.Err() != nil {
			return
		}
		sj.add(res)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func failed(err error) *proberv1.JobResult {
	return &proberv1.JobResult{StartedAt: timestamppb.Now(), Duration: durationpb.New(0), Error: err.Error()}
}

func (sj *scheduled) add(r *proberv1.JobResult) {
	sj.mu.Lock()
	defer sj.mu.Unlock()
	sj.ring[sj.next] = r
	sj.next = (sj.next + 1) % len(sj.ring)
	if sj.next == 0 {
		sj.full = true
	}
}

// newest returns up to n results, newest first.
func (sj *scheduled) newest(n int) []*proberv1.JobResult {
	sj.mu.Lock()
	defer sj.mu.Unlock()
	size := sj.next
	if sj.full {
		size = len(sj.ring)
	}
	n = min(n, size)
	out := make([]*proberv1.JobResult, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, sj.ring[(sj.next-1-i+len(sj.ring))%len(sj.ring)])
	}
	return out
}

// add validates and stores a job, replacing one with the same id.
func (s *scheduler) add(ctx context.Context, j *proberv1.Job) (*proberv1.Job, error) {
	if j == nil {
		return nil, bad("job", "required")
	}
	if err := validID(j.GetId()); err != nil {
		return nil, bad("job.id", "%v", err)
	}
	if j.GetInterval() == nil {
		return nil, bad("job.interval", "required")
	}
	if err := checkDur("job.interval", j.GetInterval(), minInterval, maxInterval); err != nil {
		return nil, err
	}
	// Refuse now what would be refused at every run.
	if _, err := s.r.prepare(ctx, j.GetSpec(), "job.spec"); err != nil {
		var re *resolveError
		if !errors.As(err, &re) {
			return nil, err
		}
	}
	j = proto.Clone(j).(*proberv1.Job)
	j.Runner = ""
	if s.reg != nil {
		return s.put(ctx, j)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, replacing := s.jobs[j.GetId()]
	if !replacing && len(s.jobs) >= maxJobs {
		return nil, bad("job", "at most %d scheduled jobs", maxJobs)
	}
	sj := &scheduled{job: j, ring: make([]*proberv1.JobResult, s.history)}
	s.jobs[j.GetId()] = sj
	if err := s.saveLocked(); err != nil {
		if replacing {
			s.jobs[j.GetId()] = old
		} else {
			delete(s.jobs, j.GetId())
		}
		return nil, err
	}
	if replacing {
		s.stopLocked(old)
		s.r.met.forget(j.GetId())
	}
	if s.started {
		s.startLocked(sj)
	}
	return j, nil
}

// stopLocked stops a job's loop; its goroutine ends on its own.
func (s *scheduler) stopLocked(sj *scheduled) {
	if sj.cancel != nil {
		sj.cancel()
	}
	sj.running = false
}

func (s *scheduler) remove(ctx context.Context, id string) (bool, error) {
	if s.reg != nil {
		return s.delete(ctx, id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sj, ok := s.jobs[id]
	if !ok {
		return false, nil
	}
	delete(s.jobs, id)
	if err := s.saveLocked(); err != nil {
		s.jobs[id] = sj
		return false, err
	}
	s.stopLocked(sj)
	s.r.met.forget(id)
	return true, nil
}

// list returns the jobs by id and whether the list may be out of date
// (with a registry: not received yet, or the watch is lost).
func (s *scheduler) list() ([]*proberv1.Job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listLocked(), s.reg != nil && (!s.synced || s.stale)
}

// listLocked returns the jobs by id, each with the prober that runs it
// (with a registry).
func (s *scheduler) listLocked() []*proberv1.Job {
	out := make([]*proberv1.Job, 0, len(s.jobs))
	for _, sj := range s.jobs {
		j := sj.job
		if s.reg != nil {
			j = proto.Clone(j).(*proberv1.Job)
			if _, known, _ := s.members.snapshot(); known {
				j.Runner = s.members.owner(jobKey(j.GetId()))
			}
		}
		out = append(out, j)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetId() < out[j].GetId() })
	return out
}

func (s *scheduler) results(id string, n int) ([]*proberv1.JobResult, bool) {
	s.mu.Lock()
	sj, ok := s.jobs[id]
	s.mu.Unlock()
	if !ok {
		return nil, false
	}
	return sj.newest(n), true
}

// saveLocked writes the job list atomically: a temporary file, fsync,
// rename over the old one, fsync of the directory.
func (s *scheduler) saveLocked() error {
	if s.path == "" {
		return nil
	}
	b, err := protojson.MarshalOptions{Multiline: true}.Marshal(&proberv1.ListJobsResponse{Jobs: s.listLocked()})
	if err != nil {
		return fmt.Errorf("encode jobs: %w", err)
	}
	dir := filepath.Dir(s.path)
	f, err := os.CreateTemp(dir, jobsFile+".tmp*")
	if err != nil {
		return fmt.Errorf("save jobs: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("save jobs: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("save jobs: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
