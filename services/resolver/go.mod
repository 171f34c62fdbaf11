module github.com/switchboard-net/switchboard/services/resolver

go 1.26.0
