#!/usr/bin/env bash
# Edge benchmark: one run, same backend, loopback only.
#   HTTP: wrk -t1 -c50 against the backend directly, through the edge,
#         through HAProxy (1 thread) and through nginx (1 worker); req/s and p99.
#   TCP:  iperf3 -t 5 directly, through the edge's TCP proxy (kernel socket
#         buffer autotuning, and socket_buffer: 256 KiB) and through HAProxy
#         mode tcp (user-space copy, and option splice-auto), interleaved
#         for the given rounds; median Gbit/s and the proxy's CPU (% of one
#         core, from /proc/<pid>/stat).
#   Wire: raw TCP vs a wire stream through the edge (Go benchmark).
# Needs: go, wrk, haproxy, nginx (nginx-light), iperf3 (Debian packages).
# Usage: bench/edge/run.sh [duration-seconds] [rounds] [all|tcp]
#   tcp runs only the iperf3 part (each round is 5 runs of 5 s).
set -euo pipefail
DUR=${1:-10}
ROUNDS=${2:-2}
ONLY=${3:-all}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d /tmp/edgebench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
for t in wrk haproxy nginx iperf3; do command -v $t >/dev/null || { echo "missing $t (apt-get install wrk haproxy nginx-light iperf3)"; exit 1; }; done

BE=127.0.0.1:19101; EDGE=127.0.0.1:19180; EDGE1=127.0.0.1:19181; HAP=127.0.0.1:19280; NGX=127.0.0.1:19380
IPERF=127.0.0.1:19501; EDGETCP=127.0.0.1:19502; HAPTCP=127.0.0.1:19503
EDGETCPB=127.0.0.1:19504; HAPTCPS=127.0.0.1:19505

echo "building..."
(cd "$ROOT/bench/edge/backend" && GOWORK=off go build -o "$TMP/backend" .)
(cd "$ROOT" && go build -o "$TMP/edge" ./services/edge/cmd/edge)

"$TMP/backend" -addr $BE & PIDS+=($!)

cat > "$TMP/edge.yaml" <<YAML
routes:
  - name: bench
    addresses: ["$BE"]
tcp:
  - listen: "$EDGETCP"
    addresses: ["$IPERF"]
  - listen: "$EDGETCPB"
    addresses: ["$IPERF"]
    socket_buffer: 262144
YAML
"$TMP/edge" --config "$TMP/edge.yaml" --http-addr $EDGE --grpc-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 \
  --wire-addr "" --balancer-addr "" --runtime-socket "$TMP/rt.sock" --log-level warn & PIDS+=($!)
EDGEPID=$!
# The same edge held to one OS thread, like HAProxy's nbthread 1.
printf 'routes:\n  - name: bench\n    addresses: ["%s"]\n' "$BE" > "$TMP/edge1.yaml"
GOMAXPROCS=1 "$TMP/edge" --config "$TMP/edge1.yaml" --http-addr $EDGE1 --grpc-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 \
  --wire-addr "" --balancer-addr "" --runtime-socket "$TMP/rt1.sock" --log-level warn & PIDS+=($!)

cat > "$TMP/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend fe
  bind $HAP
  default_backend be
backend be
  http-reuse always
  server s1 $BE
listen tcpfwd
  mode tcp
  bind $HAPTCP
  server i1 $IPERF
listen tcpsplice
  mode tcp
  option splice-auto
  bind $HAPTCPS
  server i1 $IPERF
CFG
haproxy -f "$TMP/haproxy.cfg" -db >/dev/null 2>&1 & PIDS+=($!)
HAPPID=$!

mkdir -p "$TMP/nginx"
cat > "$TMP/nginx.conf" <<CFG
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx; proxy_temp_path $TMP/nginx;
  fastcgi_temp_path $TMP/nginx; uwsgi_temp_path $TMP/nginx; scgi_temp_path $TMP/nginx;
  upstream be { server $BE; keepalive 64; }
  server {
    listen $NGX;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CFG
nginx -c "$TMP/nginx.conf" -e "$TMP/nginx/error.log" >/dev/null 2>&1 & PIDS+=($!)

iperf3 -s -B 127.0.0.1 -p ${IPERF##*:} >/dev/null 2>&1 & PIDS+=($!)

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/${1%:*}/${1##*:}) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened"; exit 1; }
for a in $BE $EDGE $EDGE1 $HAP $NGX $IPERF $EDGETCP $HAPTCP $EDGETCPB $HAPTCPS; do wait_port $a; done

declare -A RPS P99
if [ "$ONLY" != tcp ]; then
run_wrk() { # name addr
  local out; out=$(wrk -t1 -c50 -d${DUR}s --latency "http://$2/" 2>&1)
  local r p; r=$(awk '/Requests\/sec/ {print $2}' <<<"$out"); p=$(awk '$1=="99%" {print $2}' <<<"$out")
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "  $1: $(grep -E 'Non-2xx|Socket errors' <<<"$out")"; fi
  echo "  $1 round: $r req/s, p99 $p"
  RPS[$1]="${RPS[$1]:-} $r"; P99[$1]="${P99[$1]:-} $p"
}
echo "HTTP: wrk -t1 -c50 -d${DUR}s, $ROUNDS interleaved rounds"
for a in $BE $EDGE $EDGE1 $HAP $NGX; do wrk -t1 -c50 -d1s "http://$a/" >/dev/null; done
for r in $(seq $ROUNDS); do
  run_wrk direct $BE; run_wrk edge $EDGE; run_wrk edge-1cpu $EDGE1; run_wrk haproxy $HAP; run_wrk nginx $NGX
done
to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 } printf "%.2f", v }'; }
best_rps() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | tail -1; }
med_p99() { tr ' ' '\n' <<<"$1" | grep -v '^$' | while read -r x; do echo "$x" | to_ms; echo; done | grep -v '^$' | sort -g | head -1; }
HREF=$(best_rps "${RPS[haproxy]}")
echo
printf "%-10s %12s %14s %12s\n" target "req/s(best)" "p99(ms,best)" "vs haproxy"
for w in direct edge edge-1cpu haproxy nginx; do
  b=$(best_rps "${RPS[$w]}"); p=$(med_p99 "${P99[$w]}")
  printf "%-10s %12s %14s %11.2fx\n" $w "$b" "$p" "$(awk -v a="$b" -v h="$HREF" 'BEGIN{print a/h}')"
done
fi

echo
echo "TCP: iperf3 -t 5, $ROUNDS interleaved rounds (proxy CPU in % of one core)"
declare -A GB CPU
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
ip_rate() { # name addr [proxy pid]
  local c0=0 c1=0 t0 t1 v u
  [ -n "${3:-}" ] && c0=$(ticks "$3"); t0=$(date +%s.%N)
  v=$(iperf3 -c ${2%:*} -p ${2##*:} -t 5 -J 2>/dev/null | awk -F: '/"bits_per_second"/ {v=$2} END {gsub(/[ ,]/,"",v); printf "%.2f", v/1e9}')
  [ -n "${3:-}" ] && c1=$(ticks "$3"); t1=$(date +%s.%N)
  u=$(awk -v a="$c0" -v b="$c1" -v s="$t0" -v e="$t1" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.0f", (b-a)/hz/(e-s)*100}')
  [ -z "${3:-}" ] && u=-
  echo "  $1 round: $v Gbit/s, proxy CPU $u"
  GB[$1]="${GB[$1]:-} $v"; CPU[$1]="${CPU[$1]:-} $u"
}
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for r in $(seq $ROUNDS); do
  ip_rate direct $IPERF; ip_rate edge $EDGETCP $EDGEPID; ip_rate edge-256k $EDGETCPB $EDGEPID
  ip_rate haproxy $HAPTCP $HAPPID; ip_rate haproxy-splice $HAPTCPS $HAPPID
done
D=$(median "${GB[direct]}")
printf "%-15s %14s %10s %10s\n" target "Gbit/s(median)" "vs direct" "proxy CPU"
for w in direct edge edge-256k haproxy haproxy-splice; do
  m=$(median "${GB[$w]}")
  printf "%-15s %14s %9.2fx %10s\n" $w "$m" "$(awk -v a="$m" -v b="$D" 'BEGIN{print a/b}')" "$(median "${CPU[$w]}")"
done
[ "$ONLY" = tcp ] && exit 0

echo
echo "Wire tunnel vs raw TCP (Go benchmark, 256 KiB writes):"
(cd "$ROOT" && go test -run XXX -bench TunnelThroughput -benchtime 2s ./services/edge/ 2>/dev/null | grep -E '^Benchmark' | awk '{print "  " $1 " " $(NF-1) " " $NF}')
