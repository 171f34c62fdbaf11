module github.com/switchboard-net/switchboard/services/prober

go 1.26.0
