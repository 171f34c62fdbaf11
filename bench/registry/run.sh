#!/usr/bin/env bash
# Registry vs Consul in one run: registrations/s and register->Watch
# propagation (p50/p99). Needs consul on PATH or in .tools/bin
# (scripts/build-consul.sh). Extra arguments go to the program
# (-n registrations, -c concurrency, -samples propagation samples).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
export PATH="$root/.tools/bin:$PATH"
cd "$root/bench/registry"
GOWORK=off go run . "$@"
