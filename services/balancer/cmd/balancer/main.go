// Command balancer runs Switchboard's load-balancing control plane.
package main

import (
	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/services/balancer"
)

func main() { service.Main(balancer.Spec()) }
