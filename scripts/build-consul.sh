#!/usr/bin/env bash
# Builds the Consul server that the registry's consul store is tested against,
# from the module in tools/consul (Consul v1.14.x, the last MPL-2.0 line), and
# links it into .tools/bin/consul. Idempotent: a second run prints one line.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

ver=$(tool_version consul github.com/hashicorp/consul)
case $ver in
v1.14.*) ;;
*)
	echo "build-consul: tools/consul requires Consul $ver; only v1.14.x (MPL-2.0) is allowed" >&2
	exit 1
	;;
esac
build_tool consul "$ver" github.com/hashicorp/consul
