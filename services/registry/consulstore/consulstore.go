package consulstore

import (
	"context"
	"errors"
	"time"

	"github.com/switchboard-net/switchboard/services/registry/embedded"
)

const DefaultPrefix = "switchboard/registry/"

type Options struct {
	Address, Prefix string
	Wait, Timeout   time.Duration
}

func Open(ctx context.Context, o Options) (*embedded.Store, error) { return nil, errors.New("todo") }
