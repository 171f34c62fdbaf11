package consulstore

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
)

func TestOlder(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	in := &registryv1.Instance{Service: "web", Id: "a", UpdatedAt: catalog.Timestamp(at)}
	agent := func(t time.Time) *api.AgentService {
		return &api.AgentService{Meta: map[string]string{metaUpdated: t.Format(time.RFC3339Nano)}}
	}
	for _, tc := range []struct {
		name string
		have *api.AgentService
		want bool
	}{
		{"missing", nil, true},
		{"an earlier registration", agent(at.Add(-time.Second)), true},
		{"the same registration", agent(at), false},
		{"a later registration", agent(at.Add(time.Second)), false},
		{"not a registry's", &api.AgentService{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := older(tc.have, in); got != tc.want {
				t.Errorf("older = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDedupe(t *testing.T) {
	inst := func(id string) *registryv1.Instance { return &registryv1.Instance{Id: id} }
	a1, a2, a3, b := inst("a"), inst("a"), inst("a"), inst("b")
	for _, tc := range []struct {
		name  string
		found []located
		want  []*registryv1.Instance
	}{
		{"no duplicates", []located{{inst: a1, node: "n1"}, {inst: b, node: "n2"}}, []*registryv1.Instance{a1, b}},
		{"the store's node wins", []located{{inst: a1, node: "old", modify: 9}, {inst: a2, node: "mine", modify: 1}, {inst: b, node: "old"}}, []*registryv1.Instance{a2, b}},
		{"else the last registered", []located{{inst: a1, node: "x", modify: 5}, {inst: a2, node: "y", modify: 7}, {inst: a3, node: "z", modify: 6}}, []*registryv1.Instance{a2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := dedupe(tc.found, "mine")
			if len(got) != len(tc.want) {
				t.Fatalf("dedupe = %d instances, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if got[i] != tc.want[i] {
					var names []string
					for _, f := range tc.found {
						if f.inst == got[i] {
							names = append(names, f.node)
						}
					}
					t.Errorf("instance %d from node %s, not the one wanted", i, strings.Join(names, ","))
				}
			}
		})
	}
}
