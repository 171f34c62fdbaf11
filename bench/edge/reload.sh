#!/usr/bin/env bash
# Edge reload benchmark: wrk -t1 -c50 through the edge, in interleaved
# rounds: "steady" (no reloads) and "reload" (the config file rewritten
# every 200 ms, alternating the route between two backends, by rename and in
# place, with a SIGHUP and one broken file per round). Prints every round:
# req/s, p99, non-2xx answers, socket errors, reloads applied and refused,
# and the reload rounds' req/s as a ratio of the steady rounds'.
# Needs: go, wrk (Debian package).
# Usage: bench/edge/reload.sh [duration-seconds] [rounds]
set -euo pipefail
DUR=${1:-10}
ROUNDS=${2:-2}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d /tmp/edgereload.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
command -v wrk >/dev/null || { echo "missing wrk (apt-get install wrk)"; exit 1; }

BE1=127.0.0.1:19111; BE2=127.0.0.1:19112; EDGE=127.0.0.1:19190; ADMIN=127.0.0.1:19191

echo "building..."
(cd "$ROOT/bench/edge/backend" && GOWORK=off go build -o "$TMP/backend" .)
(cd "$ROOT" && go build -o "$TMP/edge" ./services/edge/cmd/edge)
"$TMP/backend" -addr $BE1 & PIDS+=($!)
"$TMP/backend" -addr $BE2 & PIDS+=($!)

conf() { printf 'routes:\n  - name: bench\n    addresses: ["%s"]\n  - name: other%s\n    path_prefix: /other\n    addresses: ["%s"]\n' "$1" "$2" "$1"; }
conf $BE1 0 > "$TMP/edge.yaml"
"$TMP/edge" --config "$TMP/edge.yaml" --http-addr $EDGE --grpc-addr 127.0.0.1:0 --admin-addr $ADMIN \
  --wire-addr "" --balancer-addr "" --registry-addr "" --prober-addr "" --runtime-socket "$TMP/rt.sock" \
  --config-poll 100ms --log-level warn 2>"$TMP/edge.log" & PIDS+=($!)
EDGEPID=$!
for _ in $(seq 100); do curl -sf "http://$EDGE/" >/dev/null 2>&1 && break; sleep 0.1; done

reloads() { curl -s "http://$ADMIN/metrics" | awk -v r="$1" '$1=="switchboard_edge_config_reloads_total{result=\""r"\"}" {print $2}'; }

# rewrite: every 200 ms a new config, until $1 (a file) exists.
rewrite() {
  local i=0
  while [ ! -e "$1" ]; do
    i=$((i+1))
    if [ $((i % 2)) = 0 ]; then be=$BE1; else be=$BE2; fi
    if [ $((i % 3)) = 0 ]; then conf $be $i > "$TMP/edge.yaml"              # in place
    else conf $be $i > "$TMP/.edge.yaml.new"; mv "$TMP/.edge.yaml.new" "$TMP/edge.yaml"; fi  # rename
    if [ $i = 5 ]; then kill -HUP $EDGEPID; fi
    if [ $i = 10 ]; then printf 'routes:\n  - name: bench\n    addresses: ["%s"]\n    policy: leastconn\n' $be > "$TMP/edge.yaml"; fi
    sleep 0.2
  done
}

round() { # kind
  local ok0 err0 out stop
  ok0=$(reloads ok); err0=$(reloads error)
  stop="$TMP/stop.$RANDOM"
  if [ "$1" = reload ]; then rewrite "$stop" & RW=$!; fi
  out=$(wrk -t1 -c50 -d"${DUR}s" --latency "http://$EDGE/")
  if [ "$1" = reload ]; then touch "$stop"; wait $RW; fi
  local rps p99 non2 sock
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); non2=${non2:-0}
  sock=$(awk -F'Socket errors: ' '/Socket errors/ {print $2}' <<<"$out"); sock=${sock:-none}
  printf '%-7s %10s req/s  p99 %-8s non-2xx %-5s socket errors: %-32s reloads ok %s error %s\n' \
    "$1" "$rps" "$p99" "$non2" "$sock" $(( $(reloads ok) - ok0 )) $(( $(reloads error) - err0 ))
  echo "$1 $rps" >> "$TMP/rps"
}

echo "wrk -t1 -c50 -d${DUR}s through the edge; $ROUNDS rounds of each, interleaved"
for r in $(seq "$ROUNDS"); do
  round steady
  round reload
done
awk '{s[$1]+=$2; n[$1]++} END {printf "reload/steady req/s: %.2f\n", (s["reload"]/n["reload"])/(s["steady"]/n["steady"])}' "$TMP/rps"
grep -c 'config reload refused' "$TMP/edge.log" | xargs printf 'refusals logged: %s\n'
