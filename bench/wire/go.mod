module github.com/switchboard-net/switchboard/bench/wire

go 1.26.7

require (
	github.com/hashicorp/yamux v0.1.2
	github.com/switchboard-net/switchboard/pkg v0.0.0
	github.com/xtaci/smux v1.5.58
)

require github.com/klauspost/compress v1.20.3 // indirect

replace (
	github.com/switchboard-net/switchboard/pkg => ../../pkg
	github.com/switchboard-net/switchboard/proto => ../../proto
)
