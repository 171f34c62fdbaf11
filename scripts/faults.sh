#!/usr/bin/env bash
# Fault injection against the compose stack (deploy/compose.yaml) under
# load; prints one table. `make e2e` runs `scripts/faults.sh --short` after
# scripts/e2e.sh.
#
# usage: scripts/faults.sh [--short]
#
# It builds the images (scripts/images.sh), brings the stack up under its own
# project name (switchboard-faults) on host ports 29xxx, with the host's
# secrets in a temporary directory, and starts bench/faults (the driver):
# open-loop GETs through the edge over a pool of keep-alive connections plus
# some new ones, one Register every 200 ms through the registry (mutual TLS,
# operator token) and a read-back of every registration each second (the
# driver's package comment says exactly what its client does). Then, one at
# a time, each fault, and after each one a wait until the traffic has been
# clean for 5 s (the "recovery") and every container is healthy again:
#
#   kill <svc>       docker kill of registry, balancer, resolver, prober,
#                    edge in turn; docker start (a killed container is not
#                    restarted by its restart policy: Docker counts docker
#                    kill as a manual stop)
#   kill consul      docker kill, docker start after 20 s (--short: 10 s)
#   recreate consul  a new node name (and host name) for Consul through a
#                    compose override, applied with `docker compose up -d`
#                    (what an operator runs after changing the file: it
#                    recreates Consul, same data volume, and runs bootstrap
#                    and consul-init again); 35 s after the recreation,
#                    docker kill and docker start
#   pause demo-1     docker pause for 10 s, then unpause
#   restart edge     docker restart (SIGTERM, the edge's drain, start)
#
# The driver prints the table: per fault the requests, the failed ones
# split by connection (opened before the fault or after), the error window,
# p99 from the fault's start to the first clean 5 s, the recovery time,
# registrations accepted / present at the end / hidden / lost, and the
# issue's aims next to the figures; then `faults: N passed, M failed`.
#
# Both runs inject every fault once. --short (CI) waits less (about 4-5
# minutes with warm images) and fails only on the hard aims the product meets
# deterministically: no accepted registration lost, recovery within 30 s of
# every fault, the stack healthy again within 60 s. The issue's other aims
# are printed as figures. The full run (default) judges every aim and
# waits longer between faults.
#
# Environment:
#   SWITCHBOARD_COMPOSE         the compose command (default: v2 when installed)
#   SWITCHBOARD_FAULTS_NO_BUILD 1 uses the images as they are (make e2e: e2e.sh built them)
#   SWITCHBOARD_FAULTS_KEEP     1 leaves the stack running
#   SWITCHBOARD_FAULTS_RATE     HTTP requests per second (default 500)
#   SWITCHBOARD_FAULTS_LOG      keep the driver's log, a per-second timeline, docker events and
#                               the containers' logs in this directory
#   SWITCHBOARD_FAULTS_ONLY     run only these faults (comma-separated: registry, balancer,
#                               resolver, prober, edge, consul-kill, consul-recreate, pause,
#                               edge-restart), to look into one
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH=$root/.tools/bin:$PATH
start_all=$SECONDS

short=false
case ${1:-} in
--short) short=true ;;
"") ;;
*)
	awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" >&2
	exit 2
	;;
esac

# shellcheck source=scripts/stack.sh
. "$(dirname "$0")/stack.sh"
stack_preflight faults docker go grpcurl curl jq

# Waits and bounds. Recovery is judged by the driver (-recover-bound); the
# script waits a little longer for it so that a late recovery is measured.
if $short; then
	consul_down=10 # kill consul: down this long
	dwell=0        # extra calm after each recovery, before the next fault
	baseline=5
else
	consul_down=20
	dwell=15
	baseline=20
fi
recreate_kill=35 # recreate consul: killed this long after the recreation
pause_for=10
recover_bound=30
healthy_bound=60
rate=${SWITCHBOARD_FAULTS_RATE:-500}

# Host ports of their own (29xxx), so that e2e.sh (2xxxx), a stack on the
# defaults or `switchboard dev` may run beside it; below Linux's ephemeral
# range (32768-60999), which the driver's own connections use by the
# thousand.
export SWITCHBOARD_CONSUL_PORT=${SWITCHBOARD_FAULTS_CONSUL_PORT:-29850}
export SWITCHBOARD_JAEGER_PORT=${SWITCHBOARD_FAULTS_JAEGER_PORT:-29686}
export SWITCHBOARD_JAEGER_HEALTH_PORT=${SWITCHBOARD_FAULTS_JAEGER_HEALTH_PORT:-29133}
export SWITCHBOARD_REGISTRY_PORT=${SWITCHBOARD_FAULTS_REGISTRY_PORT:-29100}
export SWITCHBOARD_BALANCER_PORT=${SWITCHBOARD_FAULTS_BALANCER_PORT:-29200}
export SWITCHBOARD_RESOLVER_PORT=${SWITCHBOARD_FAULTS_RESOLVER_PORT:-29300}
export SWITCHBOARD_DNS_PORT=${SWITCHBOARD_FAULTS_DNS_PORT:-29053}
export SWITCHBOARD_PROBER_PORT=${SWITCHBOARD_FAULTS_PROBER_PORT:-29400}
export SWITCHBOARD_EDGE_PORT=${SWITCHBOARD_FAULTS_EDGE_PORT:-29080}
export SWITCHBOARD_EDGE_GRPC_PORT=${SWITCHBOARD_FAULTS_EDGE_GRPC_PORT:-29500}
export SWITCHBOARD_EDGE_ADMIN_PORT=${SWITCHBOARD_FAULTS_EDGE_ADMIN_PORT:-29501}
export SWITCHBOARD_REGISTRY_ADMIN_PORT=${SWITCHBOARD_FAULTS_REGISTRY_ADMIN_PORT:-29101}
export SWITCHBOARD_BALANCER_ADMIN_PORT=${SWITCHBOARD_FAULTS_BALANCER_ADMIN_PORT:-29201}
export SWITCHBOARD_RESOLVER_ADMIN_PORT=${SWITCHBOARD_FAULTS_RESOLVER_ADMIN_PORT:-29301}
export SWITCHBOARD_PROBER_ADMIN_PORT=${SWITCHBOARD_FAULTS_PROBER_ADMIN_PORT:-29401}
export SWITCHBOARD_WIRE_PORT=${SWITCHBOARD_FAULTS_WIRE_PORT:-29900}
export SWITCHBOARD_WIRE_QUIC_PORT=${SWITCHBOARD_FAULTS_WIRE_QUIC_PORT:-29902}

project=switchboard-faults
work=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-faults.XXXXXX")
secrets=$work/secrets
mkdir -p "$secrets"
export SWITCHBOARD_SECRETS_DIR=$secrets
# The compose override that gives Consul a new node name (fault 3); empty
# until then, so that every compose call sees the same configuration.
override=$work/consul-node.yaml
compose_files=(-f "$root/deploy/compose.yaml")
dc() { "${compose[@]}" -p "$project" "${compose_files[@]}" "$@"; }

log() { printf 'faults [%3ds] %s\n' "$((SECONDS - start_all))" "$*" >&2; }
driver_pid=
events_pid=
sampler_pid=
fault_epoch=0
ctl=
printed=false

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$driver_pid" ] && kill -0 "$driver_pid" 2>/dev/null; then
		kill "$driver_pid" 2>/dev/null || true
		wait "$driver_pid" 2>/dev/null || true
	fi
	local p
	for p in $events_pid $sampler_pid; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	# A paused container cannot be stopped: unpause first.
	for id in $(dc ps -q 2>/dev/null); do
		[ "$(docker inspect -f '{{.State.Paused}}' "$id" 2>/dev/null)" = true ] && docker unpause "$id" >/dev/null 2>&1
	done
	if [ -n "${SWITCHBOARD_FAULTS_LOG:-}" ]; then
		mkdir -p "$SWITCHBOARD_FAULTS_LOG"
		cp "$work"/*.log "$work/timeline.txt" "$SWITCHBOARD_FAULTS_LOG/" 2>/dev/null || true
		dc logs --no-color -t >"$SWITCHBOARD_FAULTS_LOG/compose.log" 2>&1 || true
		log "logs kept in $SWITCHBOARD_FAULTS_LOG"
	fi
	if ! $printed && [ -s "$work/table" ]; then
		cat "$work/table" # interrupted: the driver printed the table so far
	elif [ "$rc" -ne 0 ] && [ ! -s "$work/table" ]; then
		log "failed; container state and the driver's log follow"
		dc ps -a >&2 || true
		tail -n 40 "$work/driver.log" >&2 2>/dev/null || true
		dc logs --no-color --tail=30 2>&1 | tail -n 300 >&2 || true
		echo "faults: 0 passed, 1 failed"
	fi
	if [ "${SWITCHBOARD_FAULTS_KEEP:-}" = 1 ]; then
		log "leaving the stack up (SWITCHBOARD_FAULTS_KEEP=1): SWITCHBOARD_SECRETS_DIR=$secrets ${compose[*]} -p $project ${compose_files[*]} down -v"
	else
		dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
		rm -rf "$work"
		log "stack torn down"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# poll SECS CMD...: runs CMD until it succeeds, at most SECS seconds.
poll() {
	local end=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.25
	done
}

unhealthy() {
	local svc id
	for svc in $(dc config --services); do
		id=$(dc ps -a -q "$svc")
		printf '%s=%s ' "$svc" "$(docker inspect -f '{{.State.Status}}{{if .State.Health}}/{{.State.Health.Status}}{{end}}' "$id" 2>/dev/null || echo missing)"
	done
}

demo_passing() {
	[ "$(grpcurl -cacert "$secrets/ca.pem" -cert "$secrets/client.pem" -key "$secrets/client-key.pem" \
		-H "authorization: Bearer $(cat "$secrets/operator.token")" -max-time 5 -d '{"service":"demo"}' \
		"127.0.0.1:$SWITCHBOARD_REGISTRY_PORT" switchboard.registry.v1.Registry/GetService |
		jq '[.instances[]? | select(.health == "HEALTH_STATUS_PASSING")] | length')" = 2 ]
}
both_demos() {
	local body
	body=$(curl -sS -m 5 "http://127.0.0.1:$SWITCHBOARD_EDGE_PORT/" "http://127.0.0.1:$SWITCHBOARD_EDGE_PORT/" \
		"http://127.0.0.1:$SWITCHBOARD_EDGE_PORT/" "http://127.0.0.1:$SWITCHBOARD_EDGE_PORT/")
	grep -q "hello from demo-1" <<<"$body" && grep -q "hello from demo-2" <<<"$body"
}

# drv METHOD PATH [ARGS...]: a call to the driver's control port.
drv() {
	local method=$1 path=$2
	shift 2
	curl -fsS -m 5 -X "$method" "$@" "http://$ctl$path"
}
note() { drv POST /note --data-urlencode "text=$*" >/dev/null || true; }
fail_fault() {
	log "FAIL: $*"
	drv POST /fail --data-urlencode "text=$*" >/dev/null || true
}
begin() { # NAME KIND [PARAM]
	log "fault: $1"
	fault_epoch=$(date +%s)
	drv POST /begin --data-urlencode "name=$1" --data-urlencode "kind=$2" --data-urlencode "param=${3:-}" >/dev/null
}
end_fault() { drv POST /end >/dev/null; }

# recover_wait: until the driver has seen 5 clean seconds since the fault's
# end (bounded), then until every container is healthy (bounded), then the
# dwell.
recover_wait() {
	local end=$((SECONDS + recover_bound + 15)) out t0=$SECONDS
	while :; do
		if out=$(curl -sS -m 5 -w '\n%{http_code}' "http://$ctl/recovered" 2>&1) && [ "${out##*$'\n'}" = 200 ]; then
			log "  traffic clean again ${out%%$'\n'*}s after the fault's end"
			break
		fi
		if [ "$SECONDS" -ge "$end" ]; then
			log "  not recovered within $((SECONDS - t0))s: ${out%$'\n'*}"
			break # the driver judges it
		fi
		sleep 0.5
	done
	if ! poll "$healthy_bound" all_healthy; then
		fail_fault "not every container healthy ${healthy_bound}s after the recovery wait: $(unhealthy)"
	else
		note "every container healthy $((SECONDS - t0))s after the fault's end"
	fi
	if [ -s "$work/consul-conns.log" ]; then
		note "registry→Consul TCP connections: at most $(awk -v t="$fault_epoch" '$1 >= t && $2 > m { m = $2 } END { print m + 0 }' "$work/consul-conns.log") (Consul answers 429 beyond 200 per client)"
	fi
	[ "$dwell" -eq 0 ] || sleep "$dwell"
}

# kill_service SVC: docker kill, then docker start unless its restart
# policy brought it back (Docker does not restart after docker kill).
kill_service() {
	local svc=$1 id
	id=$(dc ps -q "$svc")
	begin "kill $svc" kill "$svc"
	docker kill "$id" >/dev/null
	sleep 1
	if [ "$(docker inspect -f '{{.State.Running}}' "$id")" = true ]; then
		note "docker kill; restarted by its restart policy"
	else
		docker start "$id" >/dev/null || fail_fault "docker start $svc"
		note "docker kill; not restarted by its restart policy within 1s, so docker start"
	fi
	end_fault
	recover_wait
}

kill_consul() {
	local id
	id=$(dc ps -q consul)
	begin "kill consul ${consul_down}s" consul-kill
	docker kill "$id" >/dev/null
	sleep "$consul_down"
	docker start "$id" >/dev/null || fail_fault "docker start consul"
	end_fault
	recover_wait
}

# recreate_consul: a new node name through the override, applied with
# `docker compose up -d` (recreates Consul, runs bootstrap and consul-init
# again); 35 s after the recreation, kill and start.
recreate_consul() {
	local id cmd node t0
	node=consul-f$((RANDOM % 900 + 100))
	id=$(dc ps -q consul)
	cmd=$(docker inspect -f '{{json .Config.Cmd}}' "$id" |
		jq -c --arg n "-node=$node" 'if any(startswith("-node=")) then map(if startswith("-node=") then $n else . end) else . + [$n] end')
	printf 'services:\n  consul:\n    hostname: %s\n    command: %s\n' "$node" "$cmd" >"$override"
	docker logs -t "$id" >"$work/consul-before-recreate.log" 2>&1 || true
	compose_files=(-f "$root/deploy/compose.yaml" -f "$override")
	begin "recreate consul (node $node), kill +${recreate_kill}s" consul-recreate
	t0=$SECONDS
	local try
	for try in 1 2 3; do
		dc up -d >"$work/up.log" 2>&1 && break
		fail_fault "docker compose up -d with the new node name failed (try $try): $(grep -v '^ ' "$work/up.log" | tail -n 2 | tr '\n' ' ')$(docker logs --tail 1 "$(dc ps -a -q consul-init)" 2>&1)"
	done
	note "docker compose up -d with node $node took $((SECONDS - t0))s (Consul recreated; bootstrap and consul-init ran again)"
	id=$(dc ps -q consul)
	local got
	got=$(docker exec "$id" /bin/consul members 2>/dev/null | awk 'NR == 2 { print $1 }') || true
	[ "$got" = "$node" ] || fail_fault "Consul's node is '$got', want $node"
	sleep $((recreate_kill - (SECONDS - t0) > 0 ? recreate_kill - (SECONDS - t0) : 0))
	docker kill "$id" >/dev/null
	docker start "$id" >/dev/null || fail_fault "docker start consul"
	note "killed and started $((SECONDS - t0))s after the recreation"
	end_fault
	recover_wait
}

pause_backend() {
	local id
	id=$(dc ps -q demo-1)
	begin "pause demo-1 ${pause_for}s" pause demo-1
	docker pause "$id" >/dev/null
	sleep "$pause_for"
	docker unpause "$id" >/dev/null
	end_fault
	recover_wait
}

restart_edge() {
	local id t0=$SECONDS
	id=$(dc ps -q edge)
	begin "docker restart edge" edge-restart
	docker restart "$id" >/dev/null || fail_fault "docker restart edge"
	note "docker restart took $((SECONDS - t0))s"
	end_fault
	recover_wait
}

if [ "${SWITCHBOARD_FAULTS_NO_BUILD:-}" = 1 ]; then
	log "using the images as they are (SWITCHBOARD_FAULTS_NO_BUILD=1)"
else
	log "building images"
	"$root/scripts/images.sh" >&2
fi
log "building the driver (bench/faults)"
(cd "$root" && go build -o "$work/faults-driver" ./bench/faults)

dc down -v --remove-orphans -t 1 >/dev/null 2>&1 || true # leftovers of a killed run
log "starting the stack (project $project)"
dc up -d >"$work/up.log" 2>&1 || {
	cat "$work/up.log" >&2
	exit 1
}
poll 180 all_healthy || {
	log "the stack did not become healthy: $(unhealthy)"
	exit 1
}
poll 60 demo_passing || {
	log "demo-1 and demo-2 not both passing"
	exit 1
}
poll 30 both_demos || {
	log "the edge does not reach both demo apps"
	exit 1
}
log "stack ready"
docker events --filter "label=com.docker.compose.project=$project" \
	--format '{{.Time}} {{.Type}} {{.Action}} {{.Actor.Attributes.name}}' >"$work/events.log" 2>&1 &
events_pid=$!
# As root: every second, how many TCP connections the registry holds to
# Consul's HTTP port (from inside its network namespace).
if [ "$(id -u)" = 0 ] && command -v nsenter >/dev/null && command -v ss >/dev/null; then
	while sleep 1; do
		pid=$(docker inspect -f '{{.State.Pid}}' "$(dc ps -q registry 2>/dev/null)" 2>/dev/null) || continue
		[ "${pid:-0}" -gt 0 ] || continue
		echo "$(date +%s) $(nsenter -t "$pid" -n ss -Htn state established '( dport = :8500 )' 2>/dev/null | wc -l)"
	done >"$work/consul-conns.log" 2>/dev/null &
	sampler_pid=$!
fi

if $short; then mode=short judge=hard; else mode=full judge=all; fi
"$work/faults-driver" -edge "http://127.0.0.1:$SWITCHBOARD_EDGE_PORT/" -rate "$rate" \
	-registry "127.0.0.1:$SWITCHBOARD_REGISTRY_PORT" -secrets "$secrets" \
	-balancer "127.0.0.1:$SWITCHBOARD_BALANCER_PORT" -edge-api "127.0.0.1:$SWITCHBOARD_EDGE_GRPC_PORT" \
	-ctl-file "$work/ctl" -recover-bound "${recover_bound}s" -judge "$judge" \
	-timeline "$work/timeline.txt" -title "scripts/faults.sh ($mode run), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)" \
	>"$work/table" 2>"$work/driver.log" &
driver_pid=$!
poll 30 test -s "$work/ctl" || {
	log "the driver did not start"
	exit 1
}
ctl=$(cat "$work/ctl")
log "driver running (control $ctl); baseline ${baseline}s"
sleep "$baseline"

# chosen FAULT: whether SWITCHBOARD_FAULTS_ONLY (if set) names it.
chosen() { [ -z "${SWITCHBOARD_FAULTS_ONLY:-}" ] || [[ ",$SWITCHBOARD_FAULTS_ONLY," == *",$1,"* ]]; }
for svc in registry balancer resolver prober edge; do
	! chosen "$svc" || kill_service "$svc"
done
! chosen consul-kill || kill_consul
! chosen consul-recreate || recreate_consul
! chosen pause || pause_backend
! chosen edge-restart || restart_edge

drv POST /stop >/dev/null
rc=0
wait "$driver_pid" || rc=$?
driver_pid=
cat "$work/table"
printed=true
if [ "$rc" -gt 1 ] || [ ! -s "$work/table" ]; then
	tail -n 20 "$work/driver.log" >&2
	echo "faults: the driver failed (exit $rc)"
	exit 1
fi
log "done in $((SECONDS - start_all))s"
exit "$rc"
