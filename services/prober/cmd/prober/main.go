// Command prober runs the Switchboard prober service.
package main

import (
	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/services/prober"
)

func main() { service.Main(prober.Spec()) }
