module github.com/switchboard-net/switchboard/services/balancer

go 1.26.0

require (
	github.com/switchboard-net/switchboard/pkg v0.0.0
	github.com/switchboard-net/switchboard/proto v0.0.0
)

replace (
	github.com/switchboard-net/switchboard/pkg => ../../pkg
	github.com/switchboard-net/switchboard/proto => ../../proto
)
