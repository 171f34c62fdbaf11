// Command resolver runs Switchboard's DNS front.
package main

import (
	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/services/resolver"
)

func main() { service.Main(resolver.Spec()) }
