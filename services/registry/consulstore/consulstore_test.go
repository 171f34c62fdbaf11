package consulstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/services/registry"
	"github.com/switchboard-net/switchboard/services/registry/consulstore"
	"github.com/switchboard-net/switchboard/services/registry/storetest"
)

func TestConformance(t *testing.T) {
	c := storetest.StartConsul(t)
	storetest.Run(t, storetest.Backend{
		Open: func(t testing.TB) registry.Store {
			s, err := consulstore.Open(context.Background(), consulstore.Options{
				Address: c.Addr, Prefix: "test/" + t.Name(), Wait: 2 * time.Second, Timeout: time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Shared: true,
		Stop:   c.Stop,
		Start:  c.Start,
	})
}
