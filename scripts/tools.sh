#!/usr/bin/env bash
# Installs the project's Go tools at pinned versions. Each tool is built once
# into a versioned folder of the user cache and linked into .tools/bin, so a
# version bump here rebuilds exactly that tool and nothing else.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SWITCHBOARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard}
bin=$root/.tools/bin
mkdir -p "$bin" "$cache"

# go_tool NAME PACKAGE VERSION: go install PACKAGE@VERSION as NAME.
go_tool() {
	local name=$1 pkg=$2 ver=$3 dir=$cache/$1-$3
	if [ ! -x "$dir/$name" ]; then
		echo "tools: installing $name $ver"
		GOBIN=$dir CGO_ENABLED=0 GOFLAGS=-mod=mod go install "$pkg@$ver"
	fi
	ln -sf "$dir/$name" "$bin/$name"
}

go_tool buf github.com/bufbuild/buf/cmd/buf v1.75.0
go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go v1.36.12
go_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc v1.6.2
go_tool staticcheck honnef.co/go/tools/cmd/staticcheck v0.8.2
go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl v1.9.4
# promtool checks and unit-tests deploy/prometheus/alerts.yaml (make check).
# Its module is all of Prometheus: the first build takes 5-25 minutes.
go_tool promtool github.com/prometheus/prometheus/cmd/promtool v0.316.0
