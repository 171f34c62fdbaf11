package etcdstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/services/registry"
	"github.com/switchboard-net/switchboard/services/registry/etcdstore"
	"github.com/switchboard-net/switchboard/services/registry/storetest"
)

func TestConformance(t *testing.T) {
	e := storetest.StartEtcd(t)
	prefix := "/test/" + t.Name() + "/"
	storetest.Run(t, storetest.Backend{
		Open: func(t testing.TB) registry.Store {
			s, err := etcdstore.Open(context.Background(), etcdstore.Options{
				Endpoints: []string{e.Endpoint}, Prefix: prefix, Timeout: time.Second, ProbeInterval: 200 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Shared: true,
		Stop:   e.Stop,
		Start:  e.Start,
	})
}
