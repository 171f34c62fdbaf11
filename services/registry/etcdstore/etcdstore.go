package etcdstore

import (
	"context"
	"errors"
	"time"

	"github.com/switchboard-net/switchboard/services/registry/embedded"
)

const DefaultPrefix = "/switchboard/registry/"

type Options struct {
	Endpoints []string
	Prefix    string
	Timeout   time.Duration
}

func Open(ctx context.Context, o Options) (*embedded.Store, error) { return nil, errors.New("todo") }
