#!/usr/bin/env bash
# Side-by-side figures for the prober on loopback, from one run:
#   ping RTT/loss summary    vs iputils ping
#   full 1-65535 TCP scan    vs nmap -sT -p- -T5
#   TCP and UDP bandwidth    vs iperf3
# It builds and starts a prober on 127.0.0.1 and drives it with grpcurl.
# As root it runs everything inside a private network namespace whose
# loopback only this script uses (five listeners it opens), so other
# programs' listeners coming and going cannot make the port lists differ;
# BENCH_NETNS=0 uses the host's loopback instead.
# Needs: go, grpcurl (.tools/bin), ping (iputils-ping), nmap, iperf3, python3
# (and iproute2 for the namespace).
# Usage: bench/prober/run.sh [seconds-per-bandwidth-test]
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.tools/bin:$PATH"
SECS=${1:-5}
for tool in grpcurl ping nmap iperf3 python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (scripts/setup.sh installs it)" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
ns=""
IN=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
if [ "$(id -u)" = 0 ] && [ "${BENCH_NETNS:-1}" != 0 ] && command -v ip >/dev/null; then
  ns="sbpbench$$"
  ip netns add "$ns"
  ip netns exec "$ns" ip link set lo up
  IN=(ip netns exec "$ns")
  echo "(in network namespace $ns: a loopback of our own)"
  # Five listeners for the scans to find.
  "${IN[@]}" python3 -c '
import socket, time
ls = []
for _ in range(5):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16); ls.append(s)
time.sleep(3600)' &
  pids+=($!)
fi

free_port() { "${IN[@]}" python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GRPC=127.0.0.1:$(free_port); ADMIN=127.0.0.1:$(free_port); BW=127.0.0.1:$(free_port); IPERF=$(free_port)

go build -o "$work/prober" ./services/prober/cmd/prober
"${IN[@]}" "$work/prober" --grpc-addr="$GRPC" --admin-addr="$ADMIN" --bandwidth-addr="$BW" \
  --registry-addr= --discovery-group= --log-level=warn &
pids+=($!)
for _ in $(seq 100); do "${IN[@]}" grpcurl -plaintext -max-time 1 "$GRPC" list >/dev/null 2>&1 && break; sleep 0.1; done

run() { "${IN[@]}" grpcurl -plaintext -max-time 120 -d "$1" "$GRPC" switchboard.prober.v1.Prober/Run; }
now() { date +%s.%N; }
# result prints the final JobResult of a Run stream as one JSON line.
result() { python3 -c '
import json,sys
dec=json.JSONDecoder(); s=sys.stdin.read(); i=0; last=None
while True:
    while i < len(s) and s[i].isspace(): i += 1
    if i >= len(s): break
    o, i = dec.raw_decode(s, i)
    if "result" in o: last = o["result"]
print(json.dumps(last))'; }
field() { python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print(eval(sys.argv[1]))" "$1"; }
dsec() { python3 -c "import sys; v=sys.argv[1]; print(float(v.rstrip('s'))*1000 if v else 0)" "$1"; }

echo "== ping 127.0.0.1: 50 echoes, 10 ms apart, 56-byte payload"
ip_out=$("${IN[@]}" ping -q -n -c 50 -i 0.01 -s 56 127.0.0.1 | tail -2)
our=$(run '{"spec":{"ping":{"target":"127.0.0.1","count":50,"interval":"0.01s","size":56}}}' | result)
echo "iputils: $(echo "$ip_out" | tr '\n' ' ')"
echo "$our" | field '"prober:  %s sent, %s received, %.0f%% loss, rtt min/avg/max/mdev = %.3f/%.3f/%.3f/%.3f ms" % (d["ping"]["sent"], d["ping"]["received"], d["ping"].get("lossPercent",0), *[float(d["ping"][k].rstrip("s"))*1000 for k in ("min","avg","max","mdev")])'

echo
echo "== full TCP connect scan of 127.0.0.1, ports 1-65535"
t0=$(now); nmap_out=$("${IN[@]}" nmap -sT -p- -T5 -n 127.0.0.1); t1=$(now)
nmap_ports=$(echo "$nmap_out" | awk -F/ '/^[0-9]+\/tcp +open/ {print $1}' | sort -n | paste -sd, -)
t2=$(now); our=$(run '{"spec":{"scan":{"target":"127.0.0.1","ports":"1-65535","concurrency":512,"timeout":"1s"}}}' | result); t3=$(now)
our_ports=$(echo "$our" | field '",".join(str(p["port"]) for p in d["scan"].get("ports",[]) if p["state"]=="PORT_STATE_OPEN")')
nmap_s=$(python3 -c "print(f'{$t1-$t0:.2f}')"); our_s=$(python3 -c "print(f'{$t3-$t2:.2f}')")
echo "nmap -sT -p- -T5: ${nmap_s}s open: $nmap_ports"
echo "prober scan:      ${our_s}s open: $our_ports"
if [ "$nmap_ports" = "$our_ports" ]; then
  echo "same open ports: yes"
else
  # Other processes on a shared machine open and close listeners between
  # the two scans: show the difference and what each of those ports is now.
  "${IN[@]}" python3 - "$nmap_ports" "$our_ports" <<'PY'
import socket, sys
a = set(filter(None, sys.argv[1].split(","))); b = set(filter(None, sys.argv[2].split(",")))
def now(p):
    s = socket.socket(); s.settimeout(1)
    try: s.connect(("127.0.0.1", int(p))); return "open now"
    except OSError: return "closed now"
    finally: s.close()
print("same open ports: NO; only nmap:", ", ".join(f"{p} ({now(p)})" for p in sorted(a - b, key=int)) or "-",
      "; only prober:", ", ".join(f"{p} ({now(p)})" for p in sorted(b - a, key=int)) or "-")
PY
fi
python3 -c "print(f'time ratio prober/nmap: {$our_s/$nmap_s:.2f}')"

echo
echo "== bandwidth over loopback, ${SECS}s each"
"${IN[@]}" iperf3 -s -1 -p "$IPERF" -B 127.0.0.1 >/dev/null 2>&1 & pids+=($!)
sleep 0.3
ip_tcp=$("${IN[@]}" iperf3 -c 127.0.0.1 -p "$IPERF" -t "$SECS" -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
our_tcp=$(run "{\"spec\":{\"bandwidth\":{\"peer\":\"$BW\",\"protocol\":\"tcp\",\"duration\":\"${SECS}s\"}}}" | result | field 'd["bandwidth"]["bitsPerSecond"]')
our_tcp_rev=$(run "{\"spec\":{\"bandwidth\":{\"peer\":\"$BW\",\"protocol\":\"tcp\",\"reverse\":true,\"duration\":\"${SECS}s\"}}}" | result | field 'd["bandwidth"]["bitsPerSecond"]')
"${IN[@]}" iperf3 -s -1 -p "$IPERF" -B 127.0.0.1 >/dev/null 2>&1 & pids+=($!)
sleep 0.3
ip_udp=$("${IN[@]}" iperf3 -c 127.0.0.1 -p "$IPERF" -u -b 1G -l 1200 -t "$SECS" -J | python3 -c '
import json,sys; s=json.load(sys.stdin)["end"]["sum"]
print(s["bits_per_second"], s["lost_percent"], s["jitter_ms"])')
our_udp=$(run "{\"spec\":{\"bandwidth\":{\"peer\":\"$BW\",\"protocol\":\"udp\",\"rateBps\":\"1000000000\",\"packetSize\":1200,\"duration\":\"${SECS}s\"}}}" | result | field '"%s %s %s" % (d["bandwidth"]["bitsPerSecond"], d["bandwidth"].get("lossPercent",0), dict(d["bandwidth"]).get("jitter","0s"))')
python3 - "$ip_tcp" "$our_tcp" "$our_tcp_rev" $ip_udp $our_udp <<'PY'
import sys
ip_tcp, our_tcp, our_rev, ip_udp, ip_loss, ip_jit, our_udp, our_loss, our_jit = sys.argv[1:]
g = lambda v: float(v) / 1e9
print(f"TCP     iperf3: {g(ip_tcp):6.2f} Gbit/s   prober: {g(our_tcp):6.2f} Gbit/s (reverse {g(our_rev):.2f})   ratio {float(our_tcp)/float(ip_tcp):.2f}")
print(f"UDP 1G  iperf3: {g(ip_udp):6.2f} Gbit/s loss {float(ip_loss):.2f}% jitter {float(ip_jit):.3f} ms"
      f"   prober: {g(our_udp):6.2f} Gbit/s loss {float(our_loss):.2f}% jitter {float(our_jit.rstrip('s'))*1000:.3f} ms")
PY
