//go:build tools

// Package tools pins the Consul server that Switchboard's registry is tested
// against. It is never compiled into Switchboard; scripts/build-consul.sh
// builds github.com/hashicorp/consul from this module's go.mod and go.sum.
package tools

import _ "github.com/hashicorp/consul"
