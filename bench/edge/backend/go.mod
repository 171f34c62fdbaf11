module github.com/switchboard-net/switchboard/bench/edge/backend

go 1.26.0
