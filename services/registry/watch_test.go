package registry

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboard-net/switchboard/pkg/watch"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
)

func instances(service string, n, port int) []*registryv1.Instance {
	var out []*registryv1.Instance
	for i := range n {
		out = append(out, &registryv1.Instance{Service: service, Id: fmt.Sprintf("i%02d", i), Address: "10.0.0.1", Port: uint32(port + i),
			Health: registryv1.HealthStatus_HEALTH_STATUS_PASSING})
	}
	return out
}

// recv returns the next message the watch sends, failing after a while.
func recv(t *testing.T, ch <-chan *registryv1.WatchResponse, errc <-chan error) *registryv1.WatchResponse {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case err := <-errc:
		t.Fatalf("watch ended: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("no watch message within 15s")
	}
	return nil
}

// TestWatchSlowReader: a watcher that stops reading holds one message in
// flight and nothing queued; once it reads again, it gets the difference
// from what it holds, or a fresh snapshot when that difference names more
// instances than the catalog holds, and ends up with the catalog as it is.
func TestWatchSlowReader(t *testing.T) {
	hub := catalog.NewHub(1)
	hub.Update(func(u *catalog.Update) { u.SetService("web", instances("web", 10, 1000)) })
	m := newMetrics("")
	ch, errc := make(chan *registryv1.WatchResponse), make(chan error, 1)
	sending := make(chan struct{}, 16) // a send has begun
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &instanceWatch{all: true, resets: m.watchResets.Inc, send: func(r *registryv1.WatchResponse) error {
		sending <- struct{}{}
		select {
		case ch <- r: // unbuffered: the send blocks while the test does not read
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	go func() { errc <- w.run(ctx, hub.Snapshot, 0) }()

	var cat watch.Catalog
	apply := func(m *registryv1.WatchResponse) bool {
		done, err := cat.Apply(m)
		if err != nil {
			t.Fatal(err)
		}
		return done
	}
	if first := recv(t, ch, errc); !first.Snapshot || !apply(first) || len(cat.Instances()) != 10 {
		t.Fatalf("first message %v, want the snapshot of 10 instances", first)
	}

	<-sending
	// One change goes out as an update; the watcher does not read it yet.
	hub.Update(func(u *catalog.Update) {
		u.SetService("web", append(instances("web", 10, 1000)[1:], instances("web", 1, 2000)...))
	})
	<-sending
	// Meanwhile every instance changes and one goes: more changes than
	// instances.
	var final []*registryv1.Instance
	for round := range 5 {
		final = instances("web", 9, 3000+100*round)
		hub.Update(func(u *catalog.Update) { u.SetService("web", final) })
	}
	first := recv(t, ch, errc)
	if first.Snapshot || len(first.Instances) != 1 || first.Instances[0].Port != 2000 {
		t.Fatalf("message in flight %v, want the update of i00 alone", first)
	}
	apply(first)
	snap := recv(t, ch, errc)
	if !snap.Snapshot || snap.More || len(snap.Instances) != 9 || snap.Index != hub.Snapshot().Index() {
		t.Fatalf("after falling behind got %v, want a fresh snapshot of 9 at index %d", snap, hub.Snapshot().Index())
	}
	apply(snap)
	for i, in := range cat.Instances() {
		if in.Port != final[i].Port {
			t.Fatalf("instance %s has port %d, want %d", in.Id, in.Port, final[i].Port)
		}
	}
	if n := testutil.ToFloat64(m.watchResets); n != 1 {
		t.Fatalf("watch resets = %v, want 1", n)
	}

	// A small change after that is an update again.
	hub.Update(func(u *catalog.Update) { u.DeleteInstance("web", "i03") })
	if u := recv(t, ch, errc); u.Snapshot || len(u.Removed) != 1 || u.Removed[0].Id != "i03" || !apply(u) || len(cat.Instances()) != 8 {
		t.Fatalf("after removing i03 got %v (holding %d), want an update removing it", u, len(cat.Instances()))
	}
}

// TestWatchParts: a snapshot and an update larger than a message go out
// in parts of at most about watchChunkBytes, that a Catalog assembles.
func TestWatchParts(t *testing.T) {
	big := func(service string, n int, v string) []*registryv1.Instance {
		out := instances(service, n, 1000)
		for _, in := range out {
			in.Metadata = map[string]string{}
			for k := range 32 {
				in.Metadata[fmt.Sprintf("k%02d", k)] = fmt.Sprintf("%s%0512d", v, k)[:512]
			}
		}
		return out
	}
	var sent []*registryv1.WatchResponse
	w := &instanceWatch{all: true, resets: func() {}, send: func(r *registryv1.WatchResponse) error { sent = append(sent, r); return nil }}
	insts := big("web", 200, "a") // about 3.4 MB
	if err := w.sendParts(7, false, true, insts, nil); err != nil {
		t.Fatal(err)
	}
	var cat watch.Catalog
	for i, m := range sent {
		if n := len(m.Instances); n == 0 {
			t.Fatalf("part %d is empty", i)
		}
		if size := protoSize(m); size > watchChunkBytes+64<<10 {
			t.Fatalf("part %d is %d bytes, over the bound %d", i, size, watchChunkBytes)
		}
		if m.Snapshot != (i == 0) || m.More != (i < len(sent)-1) || m.Index != 7 {
			t.Fatalf("part %d of %d: snapshot=%v more=%v index=%d", i, len(sent), m.Snapshot, m.More, m.Index)
		}
		done, err := cat.Apply(m)
		if err != nil || done != (i == len(sent)-1) {
			t.Fatalf("applying part %d of %d: done=%v, %v", i, len(sent), done, err)
		}
	}
	if len(sent) < 3 || len(cat.Instances()) != 200 {
		t.Fatalf("%d parts assembled to %d instances, want several parts of 200", len(sent), len(cat.Instances()))
	}
}
