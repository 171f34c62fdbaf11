#!/usr/bin/env bash
# Edge benchmark: one run, same backend, loopback only.
#   HTTP: wrk -t1 -c50 against the backend directly, through the edge,
#         through HAProxy (1 thread) and through nginx (1 worker), interleaved
#         rounds; every round's req/s, p99, ratio to the same round's HAProxy
#         and each proxy's CPU per request (from /proc/<pid>/stat). Then a
#         Go CPU profile of the edge under the same load (--pprof), and h2c
#         through the edge vs h2c directly with h2load (nghttp2-client).
#   TCP:  iperf3 -t 5 directly, through the edge's TCP proxy (kernel socket
#         buffer autotuning, and socket_buffer: 256 KiB) and through HAProxy
#         mode tcp (user-space copy, and option splice-auto), interleaved
#         for the given rounds; median Gbit/s and the proxy's CPU (% of one
#         core, from /proc/<pid>/stat).
#   Wire: raw TCP vs a wire stream through the edge (Go benchmark).
# Needs: go, wrk, haproxy, nginx (nginx-light), iperf3 (Debian packages);
# h2load (nghttp2-client) for the h2c part, skipped without it.
# Usage: bench/edge/run.sh [duration-seconds] [rounds] [all|http|tcp]
#   http runs only the HTTP part; tcp only the iperf3 part (each round is
#   5 runs of 5 s).
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
EDGEADMIN=127.0.0.1:19190
"$TMP/edge" --config "$TMP/edge.yaml" --http-addr $EDGE --grpc-addr 127.0.0.1:0 --admin-addr $EDGEADMIN --pprof \
  --wire-addr "" --balancer-addr "" --runtime-socket "$TMP/rt.sock" --log-level warn & PIDS+=($!)
EDGEPID=$!
# The same edge held to one OS thread, like HAProxy's nbthread 1.
printf 'routes:\n  - name: bench\n    addresses: ["%s"]\n' "$BE" > "$TMP/edge1.yaml"
GOMAXPROCS=1 "$TMP/edge" --config "$TMP/edge1.yaml" --http-addr $EDGE1 --grpc-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 \
  --wire-addr "" --balancer-addr "" --runtime-socket "$TMP/rt1.sock" --log-level warn & PIDS+=($!)
EDGE1PID=$!

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
NGXMASTER=$!

iperf3 -s -B 127.0.0.1 -p ${IPERF##*:} >/dev/null 2>&1 & PIDS+=($!)

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/${1%:*}/${1##*:}) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened"; exit 1; }
for a in $BE $EDGE $EDGE1 $HAP $NGX $IPERF $EDGETCP $HAPTCP $EDGETCPB $HAPTCPS; do wait_port $a; done

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# cpu_ticks PID...: user+system ticks of these processes together.
cpu_ticks() { local s=0 p; for p in "$@"; do s=$((s + $(ticks "$p"))); done; echo $s; }
HZ=$(getconf CLK_TCK)

if [ "$ONLY" != tcp ]; then
# nginx's worker is the master's child.
NGXWORKER=$(pgrep -P "$NGXMASTER" | head -1)
declare -A PIDOF=([direct]="" [edge]="$EDGEPID" [edge-1cpu]="$EDGE1PID" [haproxy]="$HAPPID" [nginx]="$NGXWORKER")
declare -A ADDROF=([direct]=$BE [edge]=$EDGE [edge-1cpu]=$EDGE1 [haproxy]=$HAP [nginx]=$NGX)
TARGETS="direct edge edge-1cpu haproxy nginx"
ROWS=()
run_wrk() { # name round -> prints one row: req/s p99 cpu-us/req
  local pid=${PIDOF[$1]} c0=0 c1=0 out r p cpu
  [ -n "$pid" ] && c0=$(cpu_ticks $pid)
  out=$(wrk -t1 -c50 -d${DUR}s --latency "http://${ADDROF[$1]}/" 2>&1)
  [ -n "$pid" ] && c1=$(cpu_ticks $pid)
  r=$(awk '/Requests\/sec/ {print $2}' <<<"$out"); p=$(awk '$1=="99%" {print $2}' <<<"$out")
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "  $1: $(grep -E 'Non-2xx|Socket errors' <<<"$out")" >&2; fi
  cpu=-
  [ -n "$pid" ] && cpu=$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" -v r="$r" -v d="$DUR" 'BEGIN{printf "%.1f", (b-a)/hz*1e6/(r*d)}')
  echo "$r $p $cpu"
}
to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 } printf "%.2f", v }'; }
echo "HTTP: wrk -t1 -c50 -d${DUR}s, $ROUNDS interleaved rounds (every round reported; CPU: the proxy's user+system CPU-microseconds per request)"
for a in $BE $EDGE $EDGE1 $HAP $NGX; do wrk -t1 -c50 -d1s "http://$a/" >/dev/null; done
printf "%-6s %-10s %10s %9s %11s %12s\n" round target "req/s" "p99(ms)" "vs haproxy" "CPU-us/req"
for r in $(seq $ROUNDS); do
  declare -A ROW=()
  for w in $TARGETS; do ROW[$w]=$(run_wrk $w $r); done
  h=$(awk '{print $1}' <<<"${ROW[haproxy]}")
  for w in $TARGETS; do
    read -r rps p99 cpu <<<"${ROW[$w]}"
    printf "%-6s %-10s %10s %9s %10.2fx %12s\n" "$r" $w "$rps" "$(to_ms <<<"$p99")" "$(awk -v a="$rps" -v h="$h" 'BEGIN{print a/h}')" "$cpu"
  done
done

echo
echo "Where the edge's CPU goes: Go CPU profile, ${DUR}s of the same wrk load (top functions, cumulative, then flat)"
curl -s -o "$TMP/cpu.pprof" "http://$EDGEADMIN/debug/pprof/profile?seconds=$DUR" &
CURLPID=$!
sleep 0.5
wrk -t1 -c50 -d${DUR}s "http://$EDGE/" >/dev/null
wait $CURLPID
(cd "$ROOT" && go tool pprof -top -cum -nodecount=25 "$TMP/edge" "$TMP/cpu.pprof" 2>/dev/null | sed -n '1,32p' | sed 's/^/  /')
(cd "$ROOT" && go tool pprof -top -nodecount=15 "$TMP/edge" "$TMP/cpu.pprof" 2>/dev/null | sed -n '6,22p' | sed 's/^/  /')
if command -v perf >/dev/null && perf stat -e task-clock true >/dev/null 2>&1; then
  echo
  echo "perf stat, ${DUR}s of wrk load each (context switches and CPU of the proxy process):"
  for w in edge haproxy nginx; do
    wrk -t1 -c50 -d${DUR}s "http://${ADDROF[$w]}/" > "$TMP/wrk.$w" &
    WPID=$!
    sleep 0.5
    perf stat -e task-clock,context-switches,cpu-migrations -p "${PIDOF[$w]}" -- sleep $((DUR - 1)) 2> "$TMP/perf.$w" >/dev/null || true
    wait $WPID
    echo "  $w: $(awk '/Requests\/sec/ {print $2}' "$TMP/wrk.$w") req/s; $(awk '/task-clock|context-switches/ {printf "%s %s  ", $1, $2}' "$TMP/perf.$w")"
  done
fi

if command -v h2load >/dev/null; then
  echo
  echo "h2c: h2load -c50 -m1 -D${DUR}, $ROUNDS interleaved rounds (direct to the backend's h2c vs through the edge's h2c)"
  for r in $(seq $ROUNDS); do
    d=$(h2load -c50 -m1 -D${DUR} "http://$BE/" 2>&1 | awk '/^finished in/ {print $4}')
    e=$(h2load -c50 -m1 -D${DUR} "http://$EDGE/" 2>&1 | awk '/^finished in/ {print $4}')
    printf "  round %s: direct %s req/s, edge %s req/s, edge/direct %.2fx\n" "$r" "$d" "$e" "$(awk -v a="$e" -v b="$d" 'BEGIN{print a/b}')"
  done
fi
fi

[ "$ONLY" = http ] && exit 0

echo
echo "TCP: iperf3 -t 5, $ROUNDS interleaved rounds (proxy CPU in % of one core)"
declare -A GB CPU
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
