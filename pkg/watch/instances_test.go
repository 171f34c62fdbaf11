package watch

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

func in(service, id string, port uint32) *registryv1.Instance {
	return &registryv1.Instance{Service: service, Id: id, Port: port}
}

func ref(service, id string) *registryv1.InstanceRef {
	return &registryv1.InstanceRef{Service: service, Id: id}
}

func held(c *Catalog) string {
	var s []string
	for _, i := range c.Instances() {
		s = append(s, i.Service+"/"+i.Id)
	}
	return strings.Join(s, ",")
}

// TestCatalog applies message sequences as a registry sends them and
// checks what a consumer sees after each complete one.
func TestCatalog(t *testing.T) {
	for _, tc := range []struct {
		name string
		msgs []*registryv1.WatchResponse
		done []bool
		want string // instances held at the end
		err  string // error of the last message
	}{
		{
			name: "snapshot in parts then updates",
			msgs: []*registryv1.WatchResponse{
				{Index: 5, Snapshot: true, More: true, Instances: []*registryv1.Instance{in("b", "2", 1), in("a", "1", 1)}},
				{Index: 5, Instances: []*registryv1.Instance{in("c", "1", 1)}},
				{Index: 6, Instances: []*registryv1.Instance{in("a", "0", 1)}, Removed: []*registryv1.InstanceRef{ref("b", "2")}},
				{Index: 7, Instances: []*registryv1.Instance{in("a", "1", 2)}, More: true},
				{Index: 7, Removed: []*registryv1.InstanceRef{ref("c", "1")}},
			},
			done: []bool{false, true, true, false, true},
			want: "a/0,a/1",
		},
		{
			name: "a fresh snapshot replaces everything",
			msgs: []*registryv1.WatchResponse{
				{Index: 5, Snapshot: true, Instances: []*registryv1.Instance{in("a", "1", 1), in("b", "1", 1)}},
				{Index: 9, Snapshot: true, Instances: []*registryv1.Instance{in("c", "1", 1)}},
			},
			done: []bool{true, true},
			want: "c/1",
		},
		{
			name: "update before any snapshot",
			msgs: []*registryv1.WatchResponse{{Index: 5, Instances: []*registryv1.Instance{in("a", "1", 1)}}},
			done: []bool{false},
			err:  "before the first snapshot",
		},
		{
			name: "parts of two indexes mixed",
			msgs: []*registryv1.WatchResponse{
				{Index: 5, Snapshot: true, More: true},
				{Index: 6, Instances: []*registryv1.Instance{in("a", "1", 1)}},
			},
			done: []bool{false, false},
			err:  "before the last part of index 5",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Catalog
			for i, m := range tc.msgs {
				done, err := c.Apply(m)
				if i == len(tc.msgs)-1 && tc.err != "" {
					if err == nil || !strings.Contains(err.Error(), tc.err) {
						t.Fatalf("last message: %v, want an error with %q", err, tc.err)
					}
					return
				}
				if err != nil || done != tc.done[i] {
					t.Fatalf("message %d: done=%v, %v; want done=%v", i, done, err, tc.done[i])
				}
			}
			if got := held(&c); got != tc.want {
				t.Fatalf("held %s, want %s", got, tc.want)
			}
			if last := tc.msgs[len(tc.msgs)-1]; c.Index() != last.Index {
				t.Fatalf("index %d, want %d", c.Index(), last.Index)
			}
		})
	}
}

// TestCatalogSharedSlices: a slice handed out stays as it was after later
// updates (consumers keep it).
func TestCatalogSharedSlices(t *testing.T) {
	var c Catalog
	if _, err := c.Apply(&registryv1.WatchResponse{Index: 1, Snapshot: true, Instances: []*registryv1.Instance{in("a", "1", 1)}}); err != nil {
		t.Fatal(err)
	}
	before := c.Instances()
	if _, err := c.Apply(&registryv1.WatchResponse{Index: 2, Instances: []*registryv1.Instance{in("a", "1", 2), in("a", "2", 1)}}); err != nil {
		t.Fatal(err)
	}
	if len(before) != 1 || before[0].Port != 1 || held(&c) != "a/1,a/2" || c.Instances()[0].Port != 2 {
		t.Fatalf("kept %v, now %s", before, held(&c))
	}
}

// FuzzCatalog feeds arbitrary message sequences (as a server or a broken
// peer might send) to a Catalog: it never panics, and what it holds is
// always sorted by service then id without duplicates.
func FuzzCatalog(f *testing.F) {
	seed := func(msgs ...*registryv1.WatchResponse) []byte {
		var out []byte
		for _, m := range msgs {
			b, _ := proto.Marshal(m)
			out = append(out, byte(len(b)>>8), byte(len(b)))
			out = append(out, b...)
		}
		return out
	}
	f.Add(seed(&registryv1.WatchResponse{Index: 1, Snapshot: true, More: true, Instances: []*registryv1.Instance{in("a", "1", 1)}},
		&registryv1.WatchResponse{Index: 1, Instances: []*registryv1.Instance{in("a", "1", 2), in("b", "0", 1)}},
		&registryv1.WatchResponse{Index: 2, Removed: []*registryv1.InstanceRef{ref("a", "1")}}))
	f.Add(seed(&registryv1.WatchResponse{Index: 3, Instances: []*registryv1.Instance{in("a", "1", 1)}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c Catalog
		for len(data) >= 2 {
			n := int(data[0])<<8 | int(data[1])
			data = data[2:]
			if n > len(data) {
				return
			}
			m := &registryv1.WatchResponse{}
			if err := proto.Unmarshal(data[:n], m); err != nil {
				return
			}
			data = data[n:]
			if _, err := c.Apply(m); err != nil {
				return
			}
			all := c.Instances()
			for i := 1; i < len(all); i++ {
				a, b := all[i-1], all[i]
				if a.GetService() > b.GetService() || (a.GetService() == b.GetService() && a.GetId() >= b.GetId()) {
					t.Fatalf("held out of order or twice: %s/%s then %s/%s", a.GetService(), a.GetId(), b.GetService(), b.GetId())
				}
			}
		}
	})
}
