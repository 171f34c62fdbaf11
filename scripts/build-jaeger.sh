#!/usr/bin/env bash
# Builds Jaeger (cmd/jaeger, the Jaeger v2 collector + query in one binary)
# from the module in tools/jaeger and links it into .tools/bin/jaeger. The
# services' OTLP traces go to it in tests and in the compose stack; the config
# for that is tools/jaeger/config.yaml. Idempotent: a second run prints one line.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

ver=$(tool_version jaeger github.com/jaegertracing/jaeger)
# The module's v1.x tags are cut together with cmd/jaeger's v2.x releases, and
# upstream stamps the binary with the v2 one; its CHANGELOG pairs the two
# ("v1.76.0 / v2.13.0"). Looked up only when a build is due.
stamp=$ver
if [ ! -x "$cache/jaeger-$ver/jaeger" ]; then
	src=$(cd "$root/tools/jaeger" && GOWORK=off go mod download github.com/jaegertracing/jaeger &&
		GOWORK=off go list -m -f '{{.Dir}}' github.com/jaegertracing/jaeger)
	v2=$(sed -n "s|^${ver//./\\.} / \\(v2\\.[0-9.]*\\) .*|\\1|p" "$src/CHANGELOG.md" | head -1)
	stamp=${v2:-$ver}
fi
build_tool jaeger "$ver" github.com/jaegertracing/jaeger/cmd/jaeger jaeger \
	"-X github.com/jaegertracing/jaeger/internal/version.latestVersion=$stamp"
