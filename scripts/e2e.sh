#!/usr/bin/env bash
# End-to-end test of the compose stack (deploy/compose.yaml), run by
# `make e2e`: builds every image locally (scripts/images.sh), brings the
# stack up (locked: mutual TLS, tokens, ACLs; the host user's certificate
# and tokens land in a temporary SWITCHBOARD_SECRETS_DIR), waits for every
# container's healthcheck (and the one-shot bootstrap and consul-init to
# exit 0), then checks what a user would:
#
#   1. every service answers `grpcurl list` and one real call
#      (registry GetService, balancer Pick, resolver Lookup, prober Run,
#      edge ListBackends) on its published port, over mutual TLS with the
#      operator token;
#   2. curl through the edge reaches both demo apps, balanced between them;
#   3. dig resolves the demo service through the resolver to both apps;
#   4. a scheduled prober ping job produces results;
#   4b. every service's admin port serves /metrics with the documented
#      names and labels (docs/*.md, deploy/prometheus/alerts.yaml), no
#      label named job or instance, and promtool accepts the alert rules
#      when it is installed;
#   5. the dashboard API (edge admin /dashboard/api/state, https with the
#      client certificate) shows the demo apps and the ping job, and
#      headless Chromium screenshots the page (through a local socat that
#      presents the client certificate);
#   6. a request through the edge leaves one trace in Jaeger with the edge's
#      span and a child span from another service (HTTP to a demo app, or
#      gRPC through the edge to a plaintext gRPC app: a registry of its own
#      started for the test on the compose network);
#   7. after one demo app is killed, all traffic goes to the other within
#      the health check period;
#   8. the stack is locked: a call without a client certificate and a
#      plaintext call are refused, the viewer token's Register is
#      PermissionDenied, the dashboard refuses a caller without a client
#      certificate, the wire listener (TLS) refuses a connection without a
#      token and carries one with the viewer token, and Consul refuses an
#      anonymous service registration and KV write.
#
# The stack is always torn down (trap), also on failure, when container
# logs are printed first. Every wait polls with a bounded deadline.
#
# Environment:
#   SWITCHBOARD_COMPOSE   the compose command ("docker compose" or
#                         "docker-compose"; default: v2 when installed)
#   SWITCHBOARD_E2E_KEEP  1 leaves the stack running for a look
#   SWITCHBOARD_E2E_ARTIFACTS  directory for the dashboard screenshot
#   SWITCHBOARD_E2E_NO_BUILD   1 uses the images as they are (no images.sh)
#   SWITCHBOARD_E2E_PROJECT    the compose project name (default
#                         switchboard-e2e), to run beside another stack
#                         (with SWITCHBOARD_IMAGE and the *_PORT variables)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH=$root/.tools/bin:$PATH
start_all=$SECONDS

# Without a Docker engine there is nothing to test: skip, except under CI.
# shellcheck source=scripts/stack.sh
. "$(dirname "$0")/stack.sh"
stack_preflight e2e docker grpcurl curl dig jq

# Host ports of their own, so a `switchboard dev` or a second stack on the
# default ports does not get in the way.
export SWITCHBOARD_CONSUL_PORT=${SWITCHBOARD_CONSUL_PORT:-28500}
export SWITCHBOARD_JAEGER_PORT=${SWITCHBOARD_JAEGER_PORT:-26686}
export SWITCHBOARD_JAEGER_HEALTH_PORT=${SWITCHBOARD_JAEGER_HEALTH_PORT:-23133}
export SWITCHBOARD_REGISTRY_PORT=${SWITCHBOARD_REGISTRY_PORT:-27100}
export SWITCHBOARD_BALANCER_PORT=${SWITCHBOARD_BALANCER_PORT:-27200}
export SWITCHBOARD_RESOLVER_PORT=${SWITCHBOARD_RESOLVER_PORT:-27300}
export SWITCHBOARD_DNS_PORT=${SWITCHBOARD_DNS_PORT:-28053}
export SWITCHBOARD_PROBER_PORT=${SWITCHBOARD_PROBER_PORT:-27400}
export SWITCHBOARD_EDGE_PORT=${SWITCHBOARD_EDGE_PORT:-28080}
export SWITCHBOARD_EDGE_GRPC_PORT=${SWITCHBOARD_EDGE_GRPC_PORT:-27500}
export SWITCHBOARD_EDGE_ADMIN_PORT=${SWITCHBOARD_EDGE_ADMIN_PORT:-27501}
export SWITCHBOARD_REGISTRY_ADMIN_PORT=${SWITCHBOARD_REGISTRY_ADMIN_PORT:-27101}
export SWITCHBOARD_BALANCER_ADMIN_PORT=${SWITCHBOARD_BALANCER_ADMIN_PORT:-27201}
export SWITCHBOARD_RESOLVER_ADMIN_PORT=${SWITCHBOARD_RESOLVER_ADMIN_PORT:-27301}
export SWITCHBOARD_PROBER_ADMIN_PORT=${SWITCHBOARD_PROBER_ADMIN_PORT:-27401}
export SWITCHBOARD_WIRE_PORT=${SWITCHBOARD_WIRE_PORT:-27900}
export SWITCHBOARD_WIRE_QUIC_PORT=${SWITCHBOARD_WIRE_QUIC_PORT:-27902}

project=${SWITCHBOARD_E2E_PROJECT:-switchboard-e2e}
dc() { "${compose[@]}" -p "$project" -f "$root/deploy/compose.yaml" "$@"; }
image=${SWITCHBOARD_IMAGE:-switchboard/switchboard:dev}

# The host user's copies of the stack's secrets (bootstrap --host): a
# directory of this run's own, so the work tree's deploy/.secrets is left
# alone. It must exist before `up`, so that it stays ours (bootstrap gives
# its files to the directory's owner).
secrets=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-e2e-secrets.XXXXXX")
export SWITCHBOARD_SECRETS_DIR=$secrets
# A plaintext gRPC app for the trace through the edge (step 6), and the
# local forwarder for the dashboard screenshot (step 5).
grpc_app=$project-grpc-app
socat_pid=

passed=0
failed=0
log() {
	case "$1" in ok:*) passed=$((passed + 1)) ;; esac
	printf 'e2e [%3ds] %s\n' "$((SECONDS - start_all))" "$*"
}
fail() {
	failed=1
	log "FAIL: $*"
	exit 1
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ "$rc" -ne 0 ]; then
		log "failed; container state and logs follow"
		dc ps -a || true
		dc logs --no-color --tail=40 2>&1 | tail -n 400 || true
	fi
	if [ -n "$socat_pid" ]; then
		kill "$socat_pid" 2>/dev/null || true
	fi
	if [ "${SWITCHBOARD_E2E_KEEP:-}" = 1 ]; then
		log "leaving the stack up (SWITCHBOARD_E2E_KEEP=1); stop it with: docker rm -f $grpc_app; SWITCHBOARD_SECRETS_DIR=$secrets ${compose[*]} -p $project -f deploy/compose.yaml down -v"
		log "the host's certificate and tokens are in $secrets"
	else
		docker rm -f "$grpc_app" "$project-connect" >/dev/null 2>&1 || true
		dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
		rm -rf "$secrets"
		log "stack torn down"
	fi
	if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
		failed=1
	fi
	# The closing line CI reads: each "ok:" above is one passed check.
	echo "e2e: $passed passed, $failed failed"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# poll SECS DESC CMD...: runs CMD until it succeeds, at most SECS seconds.
# On timeout the last attempt's output is shown.
poll() {
	local secs=$1 desc=$2 end=$((SECONDS + $1))
	shift 2
	until "$@" >/dev/null 2>&1; do
		if [ "$SECONDS" -ge "$end" ]; then
			log "timed out after ${secs}s waiting for: $desc; last attempt:"
			"$@" || true
			return 1
		fi
		sleep 0.25
	done
}

# grpcs TOKEN ARGS...: grpcurl over mutual TLS with the host's client
# certificate, verifying the service against the stack's CA, with the
# bearer token in $secrets/TOKEN.token (none when TOKEN is "-").
grpcs() {
	local tok=$1
	shift
	local auth=()
	if [ "$tok" != - ]; then
		auth=(-H "authorization: Bearer $(cat "$secrets/$tok.token")")
	fi
	grpcurl -cacert "$secrets/ca.pem" -cert "$secrets/client.pem" -key "$secrets/client-key.pem" "${auth[@]}" "$@"
}

# grpc PORT METHOD [JSON]: one unary call as the operator (bounded).
grpc() {
	local port=$1 method=$2 data=${3:-'{}'}
	grpcs operator -max-time 5 -d "$data" "127.0.0.1:$port" "$method"
}

if [ "${SWITCHBOARD_E2E_NO_BUILD:-}" = 1 ]; then
	log "using the images as they are (SWITCHBOARD_E2E_NO_BUILD=1)"
else
	log "building images"
	"$root/scripts/images.sh"
fi
dc down -v --remove-orphans -t 1 >/dev/null 2>&1 || true # leftovers of a killed run

log "starting the stack"
t0=$SECONDS
dc up -d >/dev/null 2>&1 || {
	dc up -d # again, to show why
	fail "compose up"
}

poll 180 "every container healthy" all_healthy || fail "the stack did not become healthy"
ready=$((SECONDS - t0))
log "stack ready in ${ready}s"
for f in ca.pem client.pem client-key.pem operator.token viewer.token; do
	[ -r "$secrets/$f" ] || fail "bootstrap did not leave $f in $secrets"
done
[ "$(stat -c %a "$secrets/client-key.pem")" = 600 ] || fail "client-key.pem is mode $(stat -c %a "$secrets/client-key.pem"), want 600"
[ "$(stat -c %u "$secrets/operator.token")" = "$(id -u)" ] || fail "operator.token is not owned by $(id -un)"
log "ok: bootstrap wrote the host's certificate and tokens ($(ls "$secrets" | paste -sd' '))"

# The demo apps register themselves; wait until both pass their checks.
demo_passing() {
	[ "$(grpc "$SWITCHBOARD_REGISTRY_PORT" switchboard.registry.v1.Registry/GetService '{"service":"demo"}' |
		jq '[.instances[]? | select(.health == "HEALTH_STATUS_PASSING")] | length')" = 2 ]
}
poll 60 "both demo apps registered and passing" demo_passing || fail "demo apps not passing"
demo_ip() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$(dc ps -q "$1")"; }
ip1=$(demo_ip demo-1)
ip2=$(demo_ip demo-2)
log "demo-1 at $ip1, demo-2 at $ip2 (both passing)"

# 1. grpcurl list and one real call per service.
for pair in registry:$SWITCHBOARD_REGISTRY_PORT balancer:$SWITCHBOARD_BALANCER_PORT \
	resolver:$SWITCHBOARD_RESOLVER_PORT prober:$SWITCHBOARD_PROBER_PORT edge:$SWITCHBOARD_EDGE_GRPC_PORT; do
	svc=${pair%%:*} port=${pair#*:}
	list=$(grpcs operator -max-time 5 "127.0.0.1:$port" list) || fail "grpcurl list $svc"
	grep -q "^switchboard\.$svc\.v1\." <<<"$list" || fail "$svc does not list switchboard.$svc.v1: $list"
	grep -q "^grpc.health.v1.Health" <<<"$list" || fail "$svc does not list grpc.health.v1"
done
log "ok: grpcurl list on all five services (mutual TLS, operator token)"

out=$(grpc "$SWITCHBOARD_REGISTRY_PORT" switchboard.registry.v1.Registry/GetService '{"service":"demo","include_unhealthy":true}')
[ "$(jq -r '[.instances[].id] | sort | join(",")' <<<"$out")" = "demo-1,demo-2" ] || fail "registry GetService demo: $out"
log "ok: registry GetService demo -> demo-1, demo-2"

picked() { grpc "$SWITCHBOARD_BALANCER_PORT" switchboard.balancer.v1.Balancer/Pick '{"service":"demo"}' | jq -er '.endpoint.id | select(test("^demo-[12]$"))'; }
poll 30 "balancer Pick demo" picked || fail "balancer Pick"
log "ok: balancer Pick demo -> $(picked)"

lookup() {
	grpc "$SWITCHBOARD_RESOLVER_PORT" switchboard.resolver.v1.Resolver/Lookup '{"name":"demo.service.switchboard.","type":"A"}' |
		jq -e 'select(.rcode == "NOERROR" and (.answer | length) == 2)'
}
poll 30 "resolver Lookup demo.service.switchboard" lookup || fail "resolver Lookup"
log "ok: resolver Lookup demo.service.switchboard. A -> 2 answers"

out=$(grpcs operator -max-time 20 -d "{\"spec\":{\"check\":{\"kind\":\"http\",\"target\":\"http://$ip1:8080/healthz\"}}}" \
	"127.0.0.1:$SWITCHBOARD_PROBER_PORT" switchboard.prober.v1.Prober/Run) || fail "prober Run: $out"
jq -se 'map(select(.result)) | .[-1].result | select(.success == true and .check.ok == true)' <<<"$out" >/dev/null ||
	fail "prober Run check of demo-1: $out"
log "ok: prober Run http check of demo-1 passed"

backends() {
	grpc "$SWITCHBOARD_EDGE_GRPC_PORT" switchboard.edge.v1.Edge/ListBackends '{"service":"demo"}' |
		jq -e 'select(([.backends[]?.id] | sort) == ["demo-1","demo-2"])'
}
poll 30 "edge ListBackends demo" backends || fail "edge ListBackends"
log "ok: edge ListBackends demo -> demo-1, demo-2"

# 2. Through the edge: both apps answer, balanced.
edge_url=http://127.0.0.1:$SWITCHBOARD_EDGE_PORT/
# edge_get N: N requests through the edge on one keep-alive connection (the
# edge picks per request); prints the "hello from demo-N" of each answer.
edge_get() {
	local urls=() i
	for ((i = 0; i < $1; i++)); do urls+=("$edge_url"); done
	curl -sS -m 10 "${urls[@]}" 2>/dev/null | grep -o 'hello from demo-[0-9]*' || true
}
both_seen() {
	local body
	body=$(edge_get 8)
	grep -q "hello from demo-1" <<<"$body" && grep -q "hello from demo-2" <<<"$body"
}
poll 30 "the edge routing / to both demo apps" both_seen || fail "edge does not reach both demo apps"
n=100
body=$(edge_get $n)
c1=$(grep -c "hello from demo-1" <<<"$body" || true)
c2=$(grep -c "hello from demo-2" <<<"$body" || true)
[ $((c1 + c2)) -eq $n ] || fail "$((n - c1 - c2)) of $n requests through the edge failed"
# Even a random 50/50 split falls under 25 of 100 with probability < 1e-6.
if [ "$c1" -lt 25 ] || [ "$c2" -lt 25 ]; then
	fail "traffic not balanced: demo-1 $c1, demo-2 $c2 of $n"
fi
log "ok: $n requests through the edge: demo-1 $c1, demo-2 $c2"

# 3. DNS through the resolver.
dns_both() {
	[ "$(dig @127.0.0.1 -p "$SWITCHBOARD_DNS_PORT" +short +time=2 +tries=1 demo.service.switchboard A | sort | paste -sd,)" = \
		"$(printf '%s\n' "$ip1" "$ip2" | sort | paste -sd,)" ]
}
poll 30 "dig demo.service.switchboard" dns_both || fail "dig did not resolve demo.service.switchboard to $ip1 and $ip2"
srv=$(dig @127.0.0.1 -p "$SWITCHBOARD_DNS_PORT" +short +time=2 +tries=1 demo.service.switchboard SRV | wc -l)
log "ok: dig demo.service.switchboard A -> $ip1, $ip2 ($srv SRV records)"

# 4. A scheduled prober job runs (it also feeds the dashboard's RTT chart).
grpc "$SWITCHBOARD_PROBER_PORT" switchboard.prober.v1.Prober/Schedule \
	"{\"job\":{\"id\":\"ping-demo-1\",\"interval\":\"1s\",\"spec\":{\"ping\":{\"target\":\"$ip1\",\"count\":1}}}}" >/dev/null ||
	fail "prober Schedule"
ping_ran() {
	grpc "$SWITCHBOARD_PROBER_PORT" switchboard.prober.v1.Prober/Results '{"id":"ping-demo-1","limit":5}' |
		jq -e 'select((.results | length) >= 2 and .results[0].success == true)'
}
poll 30 "two results of the scheduled ping job" ping_ran || fail "scheduled ping job"
rtt=$(grpc "$SWITCHBOARD_PROBER_PORT" switchboard.prober.v1.Prober/Results '{"id":"ping-demo-1","limit":1}' | jq -r '.results[0].ping.avg')
log "ok: scheduled ping job to demo-1 runs (rtt $rtt)"

# 4b. Metrics people alert on: each admin port's /metrics (https) has the
# documented series, with their labels, after the traffic above.
scrape() { curl -fsS -m 5 --cacert "$secrets/ca.pem" "https://127.0.0.1:$1/metrics"; }
has_series() { # PORT SERIES...: every SERIES (a line prefix) is in PORT's /metrics
	local port=$1 text s
	shift
	text=$(scrape "$port") || return 1
	for s in "$@"; do grep -qF -- "$s" <<<"$text" || return 1; done
}
declare -A want_series=(
	[registry:$SWITCHBOARD_REGISTRY_ADMIN_PORT]='switchboard_registry_backend_up{store="consul"} 1|switchboard_registry_instances{|switchboard_registry_stale{'
	[balancer:$SWITCHBOARD_BALANCER_ADMIN_PORT]='switchboard_balancer_registry_stale 0|switchboard_balancer_endpoints{service="demo"} 2|switchboard_balancer_endpoints_healthy{service="demo"} 2|switchboard_balancer_endpoints_ejected{service="demo"} 0|switchboard_balancer_breaker_open{service="demo"} 0'
	[resolver:$SWITCHBOARD_RESOLVER_ADMIN_PORT]='switchboard_resolver_queries_total{protocol="udp",qtype="A",rcode="NOERROR"}|switchboard_resolver_query_duration_seconds_bucket{'
	[prober:$SWITCHBOARD_PROBER_ADMIN_PORT]='switchboard_prober_instance_up{id="demo-1",service="demo"} 1|switchboard_prober_health_checks_total{'
	[edge:$SWITCHBOARD_EDGE_ADMIN_PORT]='switchboard_edge_http_requests_total{code="2xx",|switchboard_edge_backend_up{backend="demo-1",service="demo"} 1|switchboard_edge_backend_up{backend="demo-2",service="demo"} 1|switchboard_edge_backend_active_requests{backend="demo-1",service="demo"}|switchboard_edge_backend_upstream_latency_seconds_bucket{backend="demo-2",service="demo",le=|switchboard_edge_backend_bytes_total{backend="demo-1",direction="sent",service="demo"}|switchboard_edge_backend_bytes_total{backend="demo-1",direction="received",service="demo"}|switchboard_edge_config_last_reload_successful 1'
)
for key in "${!want_series[@]}"; do
	svc=${key%%:*} port=${key#*:}
	IFS='|' read -ra series <<<"${want_series[$key]}"
	poll 30 "$svc's documented metrics" has_series "$port" "${series[@]}" || {
		text=$(scrape "$port" || true)
		for s in "${series[@]}"; do grep -qF -- "$s" <<<"$text" || log "$svc /metrics lacks: $s"; done
		fail "$svc's /metrics lacks documented series"
	}
	text=$(scrape "$port") || fail "$svc /metrics"
	if grep -E '^[a-z_]+\{([^}]*,)?(job|instance)="' <<<"$text" | head -3 | grep .; then
		fail "$svc exports a label named job or instance (Prometheus's own)"
	fi
	if grep -E '^[a-z_]+' <<<"$text" | grep -vE '^(switchboard_'"$svc"'_|grpc_server_|go_|process_|promhttp_)' | head -3 | grep .; then
		fail "$svc exports a series without its switchboard_${svc}_ prefix"
	fi
done
log "ok: every admin port's /metrics has the documented series and labels"
if command -v promtool >/dev/null; then
	promtool check rules "$root/deploy/prometheus/alerts.yaml" >/dev/null || fail "promtool check rules deploy/prometheus/alerts.yaml"
	promtool test rules "$root/deploy/prometheus/alerts_test.yaml" >/dev/null || fail "promtool test rules deploy/prometheus/alerts_test.yaml"
	log "ok: promtool check rules and test rules pass on deploy/prometheus/alerts.yaml"
else
	log "skip: promtool not installed (scripts/tools.sh installs it)"
fi

# 5. The dashboard, when the edge serves it: https on the admin port, with
# the host's client certificate (the admin port beyond loopback serves only
# /metrics, /healthz and /readyz without one).
dash=https://127.0.0.1:$SWITCHBOARD_EDGE_ADMIN_PORT/dashboard
dcurl() { curl --cacert "$secrets/ca.pem" --cert "$secrets/client.pem" --key "$secrets/client-key.pem" "$@"; }
code=$(dcurl -s -o /dev/null -w '%{http_code}' -m 5 "$dash/api/state" || true)
if [ "$code" = 200 ]; then
	dash_ok() {
		dcurl -fsS -m 5 "$dash/api/state" |
			jq -e 'select(([.services[] | select(.name == "demo") | .instances[].id] | sort) == ["demo-1","demo-2"] and (.probes | length) >= 1)'
	}
	poll 20 "dashboard state with demo and a probe" dash_ok || fail "dashboard state"
	if command -v chromium >/dev/null && command -v socat >/dev/null; then
		# Chromium cannot be handed a client certificate on its command
		# line: a local socat presents it and forwards plain HTTP.
		proxy_port=${SWITCHBOARD_E2E_DASH_PROXY_PORT:-27599}
		socat "TCP-LISTEN:$proxy_port,bind=127.0.0.1,reuseaddr,fork" \
			"OPENSSL:127.0.0.1:$SWITCHBOARD_EDGE_ADMIN_PORT,cafile=$secrets/ca.pem,cert=$secrets/client.pem,key=$secrets/client-key.pem,commonname=localhost" \
			>/dev/null 2>&1 &
		socat_pid=$!
		proxied=http://127.0.0.1:$proxy_port/dashboard
		poll 10 "the dashboard through the local socat" curl -fsS -m 5 -o /dev/null "$proxied/api/state" ||
			fail "the dashboard through socat (port $proxy_port)"
		shots=${SWITCHBOARD_E2E_ARTIFACTS:-$(mktemp -d)}
		mkdir -p "$shots"
		timeout 90 chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars \
			--user-data-dir="$(mktemp -d)" --virtual-time-budget=6000 --window-size=1280,860 \
			--screenshot="$shots/dashboard.png" "$proxied" >/dev/null 2>&1 || fail "dashboard screenshot"
		kill "$socat_pid" 2>/dev/null || true
		socat_pid=
		log "ok: dashboard (https, client certificate) serves demo-1, demo-2 and probes; screenshot $shots/dashboard.png"
	else
		log "ok: dashboard (https, client certificate) serves demo-1, demo-2 and probes (no chromium and socat for a screenshot)"
	fi
else
	log "skip: the edge serves no dashboard yet (GET $dash/api/state: $code)"
fi

# 6. Traces through the edge with spans from the edge and, as children of
# the edge's span, from another service, on both request paths: HTTP/1 to
# a demo app, and gRPC (HTTP/2) through the edge to a gRPC app. Spans are
# exported in batches (every 5s by default), so each trace is polled.
jaeger=http://127.0.0.1:$SWITCHBOARD_JAEGER_PORT
new_trace() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
new_span() { od -An -N8 -tx1 /dev/urandom | tr -d ' \n'; }
http_trace=$(new_trace)
curl -fsS -m 5 -H "traceparent: 00-$http_trace-$(new_span)-01" "$edge_url" >/dev/null || fail "traced request"
# A plaintext gRPC app behind the edge, by registry tag. The stack's own
# services take mutual TLS only (and the edge proxies to plaintext
# backends), so the app is a registry of its own: embedded store, no TLS,
# traced like the services, on the compose network for this test only.
net=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$(dc ps -q edge)")
docker run -d --name "$grpc_app" --network "$net" --user 65532:65532 --read-only --tmpfs /tmp \
	--cap-drop ALL --security-opt no-new-privileges:true \
	-e OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4317 -e OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
	--entrypoint /bin/registry "$image" --store=embedded --data-dir=/tmp/registry \
	--grpc-addr=0.0.0.0:7100 --insecure >/dev/null || fail "start the plaintext gRPC app"
app_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$grpc_app")
grpc "$SWITCHBOARD_REGISTRY_PORT" switchboard.registry.v1.Registry/Register \
	"{\"instance\":{\"service\":\"grpc-app\",\"id\":\"grpc-app-1\",\"address\":\"$app_ip\",\"port\":7100,\"tags\":[\"edge.route=/switchboard.registry.v1.Registry/\"]}}" >/dev/null ||
	fail "register the gRPC app behind the edge"
grpc_trace=$(new_trace)
grpc_via_edge() {
	grpcurl -plaintext -max-time 5 -import-path "$root/proto" -proto switchboard/registry/v1/registry.proto \
		-H "traceparent: 00-$grpc_trace-$(new_span)-01" "127.0.0.1:$SWITCHBOARD_EDGE_PORT" switchboard.registry.v1.Registry/ListServices
}
poll 20 "gRPC through the edge to the gRPC app" grpc_via_edge || fail "gRPC through the edge to the gRPC app"
log "ok: gRPC through the edge to a gRPC app (ListServices)"

trace_services() { # TRACE_ID
	curl -fsS -m 5 "$jaeger/api/traces/$1" | jq -r '[.data[0].processes[].serviceName] | unique | join(",")'
}
# child_of_edge TRACE_ID: the trace holds a span of another service whose
# parent is an edge span (the edge passed on its own context, not just the
# client's header).
child_of_edge() {
	curl -fsS -m 5 "$jaeger/api/traces/$1" | jq -e '
		.data[0] as $t
		| [$t.processes | to_entries[] | select(.value.serviceName == "switchboard-edge") | .key] as $edge
		| [$t.spans[] | select(.processID as $p | $edge | index($p)) | .spanID] as $edgeSpans
		| [$t.spans[] | select((.processID as $p | $edge | index($p)) | not)
		   | select(any(.references[]?; .refType == "CHILD_OF" and (.spanID as $s | $edgeSpans | index($s))))]
		| length > 0'
}
for t in "$http_trace" "$grpc_trace"; do
	if [ "$t" = "$http_trace" ]; then path="HTTP to a demo app"; else path="gRPC to a gRPC app"; fi
	poll 30 "$path: a trace with the edge's span and a child span of another service" child_of_edge "$t" ||
		fail "$path: trace $t has [$(trace_services "$t" 2>/dev/null || true)], want switchboard-edge and a child span of another service"
	log "ok: $path: trace $t has [$(trace_services "$t" 2>/dev/null || true)], a child span under the edge's"
done
edge_traces=$(curl -fsS -m 5 "$jaeger/api/traces?service=switchboard-edge&limit=20&lookback=1h" | jq '.data | length')
log "Jaeger holds $edge_traces traces of switchboard-edge"

# 7. Kill one demo app: traffic must all go to the other within the check
# period (checks every 2 s, critical after 2 failures: well under 20 s).
docker kill -s KILL "$(dc ps -q demo-2)" >/dev/null
t_kill=$SECONDS
only_demo1() {
	local body
	body=$(edge_get 20)
	[ "$(grep -c "hello from demo-1" <<<"$body")" -eq 20 ]
}
poll 20 "all traffic on demo-1 after demo-2 was killed" only_demo1 || fail "traffic did not move off the killed demo-2"
moved=$((SECONDS - t_kill))
crit() {
	grpc "$SWITCHBOARD_REGISTRY_PORT" switchboard.registry.v1.Registry/GetService '{"service":"demo","include_unhealthy":true}' |
		jq -e '.instances[] | select(.id == "demo-2" and .health == "HEALTH_STATUS_CRITICAL")'
}
poll 20 "demo-2 critical in the registry" crit || fail "registry does not mark the killed demo-2 critical"
log "ok: demo-2 killed; all traffic on demo-1 within ${moved}s, demo-2 critical in the registry"

# 8. The stack is locked.
reg=127.0.0.1:$SWITCHBOARD_REGISTRY_PORT
# refused WHAT CMD...: CMD must fail; the end of its output is left in $last.
refused() {
	local what=$1 out
	shift
	if out=$("$@" 2>&1); then
		fail "$what was answered: $out"
	fi
	last=$(tail -n 3 <<<"$out" | tr '\n' ' ' | cut -c1-140)
}
refused "a call without a client certificate" \
	grpcurl -cacert "$secrets/ca.pem" -H "authorization: Bearer $(cat "$secrets/operator.token")" -max-time 5 "$reg" list
log "ok: a call without a client certificate is refused ($last)"
refused "a plaintext call" grpcurl -plaintext -max-time 5 "$reg" list
log "ok: a plaintext call is refused ($last)"
grpcs viewer -max-time 5 -d '{"service":"demo"}' "$reg" switchboard.registry.v1.Registry/GetService >/dev/null ||
	fail "the viewer token cannot read"
intruder='{"instance":{"service":"demo","id":"intruder","address":"192.0.2.1","port":80}}'
refused "Register with the viewer token" grpcs viewer -max-time 5 -d "$intruder" "$reg" switchboard.registry.v1.Registry/Register
grep -q "PermissionDenied" <<<"$last" || fail "Register with the viewer token: want PermissionDenied, got: $last"
log "ok: the viewer token reads, and its Register is refused ($last)"
refused "Register with a client certificate and no token" grpcs - -max-time 5 -d "$intruder" "$reg" switchboard.registry.v1.Registry/Register
grep -Eq "PermissionDenied|Unauthenticated" <<<"$last" || fail "Register without a token: want PermissionDenied, got: $last"
log "ok: a client certificate without a token may not register ($last)"
code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 --cacert "$secrets/ca.pem" "https://127.0.0.1:$SWITCHBOARD_EDGE_ADMIN_PORT/dashboard/api/state" || true)
[ "$code" = 403 ] || fail "the dashboard without a client certificate answered $code, want 403"
code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 --cacert "$secrets/ca.pem" "https://127.0.0.1:$SWITCHBOARD_EDGE_ADMIN_PORT/metrics" || true)
[ "$code" = 200 ] || fail "the edge's /metrics without a client certificate answered $code, want 200"
log "ok: the dashboard refuses a caller without a client certificate (403; /metrics 200)"
# The wire listeners: `switchboard connect` from the image, on the host's
# network, reaches demo with the viewer token (a stream needs read on its
# service) over TLS (with zstd compression) and over QUIC, and is refused
# without a token on both.
wire_connect() { # DOCKER-RUN-OPTIONS... -- CONNECT-FLAGS...
	local opts=()
	while [ "$1" != -- ]; do
		opts+=("$1")
		shift
	done
	shift
	docker run "${opts[@]}" --network host --user 65532:65532 -v "$secrets/ca.pem:/ca.pem:ro" "$image" \
		connect demo --tls-ca /ca.pem "$@"
}
wire_tls=(--edge "127.0.0.1:$SWITCHBOARD_WIRE_PORT" --tls)
wire_quic=(--edge "quic://127.0.0.1:$SWITCHBOARD_WIRE_QUIC_PORT")
refused "a wire connection without a token" wire_connect --rm -- "${wire_tls[@]}" --listen 127.0.0.1:0
grep -q "UNAUTHORIZED" <<<"$last" || fail "a wire connection without a token: want UNAUTHORIZED, got: $last"
refused "a QUIC wire connection without a token" wire_connect --rm -- "${wire_quic[@]}" --listen 127.0.0.1:0
grep -q "UNAUTHORIZED" <<<"$last" || fail "a QUIC wire connection without a token: want UNAUTHORIZED, got: $last"
wire_port=${SWITCHBOARD_E2E_CONNECT_PORT:-27901}
for transport in tls quic; do
	if [ "$transport" = tls ]; then
		flags=("${wire_tls[@]}" --compress zstd)
	else
		flags=("${wire_quic[@]}")
	fi
	wire_connect -d --name "$project-connect" -- "${flags[@]}" --token "$(cat "$secrets/viewer.token")" --listen "127.0.0.1:$wire_port" >/dev/null ||
		fail "switchboard connect over $transport with the viewer token"
	through_wire() { curl -fsS -m 5 "http://127.0.0.1:$wire_port/" | grep -q "hello from demo-1"; }
	poll 10 "demo-1 through the wire listener ($transport)" through_wire || fail "demo through the wire listener over $transport"
	docker rm -f "$project-connect" >/dev/null 2>&1 || true
done
log "ok: switchboard connect carries a connection with the viewer token over TLS (zstd) and QUIC, and is refused without one ($last)"
consul=http://127.0.0.1:$SWITCHBOARD_CONSUL_PORT
code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -X PUT -d '{"Name":"intruder"}' "$consul/v1/agent/service/register" || true)
[ "$code" = 403 ] || fail "Consul answered an anonymous service registration with $code, want 403"
code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -X PUT -d 'x' "$consul/v1/kv/switchboard/registry/intruder" || true)
[ "$code" = 403 ] || fail "Consul answered an anonymous KV write with $code, want 403"
log "ok: Consul refuses an anonymous service registration and KV write (403)"

log "PASS: stack ready in ${ready}s, all checks in $((SECONDS - t0))s, total $((SECONDS - start_all))s"
