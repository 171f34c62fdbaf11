module github.com/switchboard-net/switchboard/cmd/switchboard

go 1.26.0

require (
	github.com/switchboard-net/switchboard/pkg v0.0.0
	github.com/switchboard-net/switchboard/proto v0.0.0
	github.com/switchboard-net/switchboard/services/balancer v0.0.0
	github.com/switchboard-net/switchboard/services/edge v0.0.0
	github.com/switchboard-net/switchboard/services/prober v0.0.0
	github.com/switchboard-net/switchboard/services/registry v0.0.0
	github.com/switchboard-net/switchboard/services/resolver v0.0.0
)

replace (
	github.com/switchboard-net/switchboard/pkg => ../../pkg
	github.com/switchboard-net/switchboard/proto => ../../proto
	github.com/switchboard-net/switchboard/services/balancer => ../../services/balancer
	github.com/switchboard-net/switchboard/services/edge => ../../services/edge
	github.com/switchboard-net/switchboard/services/prober => ../../services/prober
	github.com/switchboard-net/switchboard/services/registry => ../../services/registry
	github.com/switchboard-net/switchboard/services/resolver => ../../services/resolver
)
