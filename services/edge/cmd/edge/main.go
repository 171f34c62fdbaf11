// Command edge runs the Switchboard edge proxy: HTTP, TCP, UDP and wire
// listeners that pick backends locally from the balancer's endpoint stream.
package main

import (
	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/services/edge"
)

func main() { service.Main(edge.Command()) }
