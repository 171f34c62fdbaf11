//go:build tools

// Package tools pins the docker compose CLI plugin that Switchboard's compose
// stack (deploy/compose.yaml) is run with. It is never compiled into
// Switchboard; scripts/build-compose.sh builds github.com/docker/compose/v2/cmd
// from this module's go.mod and go.sum.
package tools

import _ "github.com/docker/compose/v2/cmd"
