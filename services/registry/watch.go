package registry

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard-net/switchboard/pkg/service"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
)

// watchChunkBytes bounds one message of an incremental Watch: a snapshot
// or an update larger than this goes out in parts. It also bounds what a
// stream whose reader stopped holds: gRPC keeps one marshalled message
// queued and a second blocked in Send, and this server computes nothing
// further for the stream until that Send returns. (gRPC marshals any
// message between 32 KiB and 1 MiB into a pooled 1 MiB buffer, so an
// unread stream holds about 2 MiB however large the catalog; measured
// with bench/registry/watchheap.)
const watchChunkBytes = 256 << 10

// instanceWatch is one incremental Watch stream: what it watches and the
// snapshot it last sent in full (its client holds exactly that).
type instanceWatch struct {
	service string // "" watches every service
	all     bool   // include instances that are not passing
	send    func(*registryv1.WatchResponse) error
	resets  func() // counts a snapshot sent to a watcher that fell behind
}

// pick returns the watched index and instances of snap.
func (w *instanceWatch) pick(snap *catalog.Snapshot) (uint64, []*registryv1.Instance) {
	if w.service == "" {
		idx, insts := snap.All()
		return idx, filter(insts, w.all)
	}
	idx, insts := snap.Service(w.service)
	return idx, filter(insts, w.all)
}

// run sends the first snapshot once the watched index passes after (at
// once when after is 0), then, each time the catalog changes, the changes
// since the snapshot last sent. No update is ever queued: a stream that
// reads slowly gets, when it next can, the difference between what it
// holds and the catalog of that moment, and a fresh snapshot when that
// difference names more instances than the snapshot holds.
func (w *instanceWatch) run(ctx context.Context, current func() *catalog.Snapshot, after uint64) error {
	snap := current()
	if after > snap.Index() {
		after = 0 // an index from an earlier run of the registry
	}
	var sent *catalog.Snapshot
	lastStale := false
	for {
		idx, insts := w.pick(snap)
		switch {
		case sent == nil:
			if after == 0 || idx > after || snap.Stale() != lastStale {
				if err := w.sendParts(idx, snap.Stale(), true, insts, nil); err != nil {
					return err
				}
				sent, after, lastStale = snap, max(after, idx), snap.Stale()
			}
		case idx > after || snap.Stale() != lastStale:
			up, rm := w.diff(sent, snap)
			var err error
			if len(up)+len(rm) > len(insts) {
				// More changes than instances: the snapshot is smaller.
				w.resets()
				err = w.sendParts(idx, snap.Stale(), true, insts, nil)
			} else {
				err = w.sendParts(idx, snap.Stale(), false, up, rm)
			}
			if err != nil {
				return err
			}
			sent, after, lastStale = snap, max(after, idx), snap.Stale()
		}
		select {
		case <-snap.Changed():
			snap = current()
		case <-ctx.Done():
			return nil
		}
	}
}

// diff returns the watched instances that are new or changed in cur since
// prev, and those gone (or, for a healthy-only watch, no longer passing).
// Services whose sets are shared between the snapshots are skipped
// without looking at their instances; within a changed service, an
// instance the same by identity is skipped before comparing contents.
func (w *instanceWatch) diff(prev, cur *catalog.Snapshot) (up []*registryv1.Instance, rm []*registryv1.InstanceRef) {
	names := []string{w.service}
	if w.service == "" {
		names = cur.ChangedServices(prev)
	} else if cur.SameService(prev, w.service) {
		return nil, nil
	}
	for _, name := range names {
		_, a := prev.Service(name)
		_, b := cur.Service(name)
		a, b = filter(a, w.all), filter(b, w.all)
		i, j := 0, 0
		for i < len(a) || j < len(b) {
			switch {
			case j == len(b) || (i < len(a) && a[i].Id < b[j].Id):
				rm = append(rm, &registryv1.InstanceRef{Service: name, Id: a[i].Id})
				i++
			case i == len(a) || b[j].Id < a[i].Id:
				up = append(up, b[j])
				j++
			default:
				if a[i] != b[j] && !proto.Equal(a[i], b[j]) {
					up = append(up, b[j])
				}
				i++
				j++
			}
		}
	}
	return up, rm
}

// sendParts sends one snapshot (reset) or update as messages of at most
// about watchChunkBytes each; all but the last have more set.
func (w *instanceWatch) sendParts(idx uint64, stale, reset bool, insts []*registryv1.Instance, rm []*registryv1.InstanceRef) error {
	msg := &registryv1.WatchResponse{Index: idx, Stale: stale, Snapshot: reset}
	size := 0
	flush := func() error {
		msg.More = true
		if err := w.send(msg); err != nil {
			return err
		}
		msg = &registryv1.WatchResponse{Index: idx, Stale: stale}
		size = 0
		return nil
	}
	for _, in := range insts {
		n := proto.Size(in) + 8
		if size > 0 && size+n > watchChunkBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		msg.Instances = append(msg.Instances, in)
		size += n
	}
	for _, r := range rm {
		n := len(r.Service) + len(r.Id) + 8
		if size > 0 && size+n > watchChunkBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		msg.Removed = append(msg.Removed, r)
		size += n
	}
	return w.send(msg)
}

// checkWholeSnapshot refuses a whole-snapshot Watch message that its
// client could not receive, saying how to watch instead.
func checkWholeSnapshot(resp *registryv1.WatchResponse) error {
	if n := proto.Size(resp); n > service.MaxMessageSize {
		return status.Errorf(codes.ResourceExhausted,
			"watch: the snapshot of %d instances is %d bytes, over the %d-byte message limit; watch with incremental set to receive it in parts",
			len(resp.Instances), n, service.MaxMessageSize)
	}
	return nil
}

func protoSize(m proto.Message) int { return proto.Size(m) }
