module github.com/switchboard-net/switchboard/bench/wireloss

go 1.26.7

require (
	github.com/switchboard-net/switchboard/pkg v0.0.0
	golang.org/x/sys v0.50.0
)

require (
	github.com/coder/websocket v1.8.15 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/quic-go/quic-go v0.65.0 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/net v0.62.0 // indirect
)

replace github.com/switchboard-net/switchboard/pkg => ../../pkg

replace github.com/switchboard-net/switchboard/proto => ../../proto
