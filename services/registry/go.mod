module github.com/switchboard-net/switchboard/services/registry

go 1.26.0
