// Command registry runs Switchboard's service catalog.
package main

import (
	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/services/registry"
)

func main() { service.Main(registry.Spec()) }
