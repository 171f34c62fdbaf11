# shellcheck shell=bash
# Shared preflight of the scripts that drive the compose stack (e2e.sh,
# faults.sh). Source it; do not run it.

# stack_preflight NAME TOOL...: exits 0 (a skip) when no Docker engine is
# reachable, unless CI is set (then 1); sets the array `compose` to the
# compose command ($SWITCHBOARD_COMPOSE, else `docker compose` v2, else
# Debian's docker-compose); and exits 1 when a TOOL is missing. NAME
# prefixes the messages.
stack_preflight() {
	local name=$1 tool
	shift
	if ! docker info >/dev/null 2>&1; then
		if [ -n "${CI:-}" ]; then
			echo "$name: no Docker engine reachable, and CI is set" >&2
			exit 1
		fi
		echo "$name: skipped, no Docker engine reachable (docker info failed)"
		exit 0
	fi
	if [ -n "${SWITCHBOARD_COMPOSE:-}" ]; then
		read -ra compose <<<"$SWITCHBOARD_COMPOSE"
	elif docker compose version >/dev/null 2>&1; then
		compose=(docker compose)
	elif command -v docker-compose >/dev/null; then
		compose=(docker-compose)
	else
		echo "$name: neither 'docker compose' nor docker-compose is installed (scripts/build-compose.sh)" >&2
		exit 1
	fi
	for tool in "$@"; do
		command -v "$tool" >/dev/null || {
			echo "$name: $tool is missing (scripts/setup.sh installs it)" >&2
			exit 1
		}
	done
}

# all_healthy: every container of the stack with a healthcheck is healthy,
# the rest are running, and the one-shot init services exited 0. It calls
# the sourcing script's `dc` (its compose command with project and file).
all_healthy() {
	local svc id state
	for svc in $(dc config --services); do
		id=$(dc ps -a -q "$svc")
		[ -n "$id" ] || return 1
		state=$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id")
		case $svc:$state in
		*":running 0 healthy" | *":running 0 none") ;;
		bootstrap:"exited 0 none" | consul-init:"exited 0 none") ;;
		*) return 1 ;;
		esac
	done
}
