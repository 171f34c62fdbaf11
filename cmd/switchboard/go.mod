module github.com/switchboard-net/switchboard/cmd/switchboard

go 1.26.0
