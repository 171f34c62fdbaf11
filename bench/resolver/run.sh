#!/usr/bin/env bash
# Resolver benchmark, with dnsperf, in one run:
#   run.sh [-mode forward] ...  Switchboard's resolver next to CoreDNS (file +
#       cache + forward) and unbound (local-data + forward-zone);
#   run.sh -mode auth ...       the resolver, Knot DNS, NSD and CoreDNS serving
#       the same zones, each pinned to one core, dnsperf on another.
# Needs dnsperf, unbound, knot and nsd (Debian: apt-get install dnsperf
# unbound knot nsd) and taskset. CoreDNS is built from its Go module,
# outside the repository, into the user cache
# (~/.cache/switchboard/coredns-<version>) the first time, unless
# COREDNS=path names a binary. Extra arguments go to the driver (main.go),
# e.g. -mode auth -duration 10s -rounds 5.
# NO_COREDNS=1 leaves CoreDNS out (not built, not measured).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/switchboard"
coredns="${COREDNS:-$cache/coredns-$COREDNS_VERSION/coredns}"

PATH="$PATH:/usr/sbin:/usr/local/sbin" # knotd and nsd
for tool in dnsperf unbound knotd nsd taskset go; do
	command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (apt-get install dnsperf unbound knot nsd)" >&2; exit 1; }
done

if [[ -n "${NO_COREDNS:-}" ]]; then
	coredns=""
elif [[ ! -x "$coredns" ]]; then
	echo "building CoreDNS $COREDNS_VERSION into $coredns" >&2
	build="$(mktemp -d)"
	trap 'rm -rf "$build"' EXIT
	(
		cd "$build"
		GOWORK=off go mod init corednsbuild >/dev/null 2>&1
		GOWORK=off go get "github.com/coredns/coredns@$COREDNS_VERSION"
		mkdir -p "$(dirname "$coredns")"
		GOWORK=off CGO_ENABLED=0 go build -o "$coredns" github.com/coredns/coredns
	)
fi

bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
(cd "$root" && go build -o "$bin/resolver" ./services/resolver/cmd/resolver)
(cd "$here" && GOWORK=off go build -o "$bin/resolver-bench" .)
"$bin/resolver-bench" -resolver "$bin/resolver" -coredns "$coredns" -unbound "$(command -v unbound)" \
	-knotd "$(command -v knotd)" -nsd "$(command -v nsd)" "$@"
