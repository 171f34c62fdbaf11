package embedded_test

import (
	"testing"

	"github.com/switchboard-net/switchboard/services/registry"
	"github.com/switchboard-net/switchboard/services/registry/embedded"
	"github.com/switchboard-net/switchboard/services/registry/storetest"
)

func TestConformance(t *testing.T) {
	dir := t.TempDir()
	storetest.Run(t, storetest.Backend{
		Open: func(t testing.TB) registry.Store {
			s, err := embedded.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	})
}
