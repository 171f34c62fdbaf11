module github.com/switchboard-net/switchboard/bench/balance

go 1.26.0

require github.com/switchboard-net/switchboard/pkg v0.0.0

replace github.com/switchboard-net/switchboard/pkg => ../../pkg
