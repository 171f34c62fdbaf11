#!/usr/bin/env bash
# Installs everything the tests need, on a fresh machine or a warm one:
# Debian packages (DNS clients, etcd, proxies and benchmark peers, chromium),
# the pinned Go tools, and Consul, Jaeger and docker compose built from their
# Go modules. Every step is idempotent and cached.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

# Debian packages the tests and benchmarks use.
debs=(
	dnsutils knot-dnsutils dnsperf unbound   # dig, kdig, DNS load, DNS peer
	knot nsd                                 # reference authoritative servers: resolver tests (secondaries too), bench/resolver
	etcd-server                              # the etcd backend's real etcd
	haproxy nginx-light wrk iperf3 nmap      # proxy and network peers
	nghttp2-client linux-perf                # h2load (h2c load), perf stat in bench/edge
	iproute2 iputils-ping nftables curl      # namespaces, reference ping, loss rules
	socat                                    # raw TCP/UDP clients in edge tests
	jq                                       # JSON checks in the compose e2e
	chromium                                 # dashboard screenshot test
)
missing=()
for p in "${debs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}"
	sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian services must not run in the background and hold our ports.
for svc in unbound haproxy nginx etcd knot nsd; do
	if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
		systemctl stop "$svc" || true
	fi
done

"$root/scripts/tools.sh"
for s in consul jaeger compose; do
	if [ -x "$root/scripts/build-$s.sh" ]; then "$root/scripts/build-$s.sh"; fi
done
echo "setup: done"
