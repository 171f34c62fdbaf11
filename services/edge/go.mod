module github.com/switchboard-net/switchboard/services/edge

go 1.26.0
