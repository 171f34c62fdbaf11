module github.com/switchboard-net/switchboard/services/balancer

go 1.26.0
