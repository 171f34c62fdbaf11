#!/usr/bin/env bash
# Builds Jaeger (cmd/jaeger, the Jaeger v2 collector + query in one binary)
# from the module in tools/jaeger and links it into .tools/bin/jaeger. The
# services' OTLP traces go to it in tests and in the compose stack; the config
# for that is tools/jaeger/config.yaml. Idempotent: a second run prints one line.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

ver=$(tool_version jaeger github.com/jaegertracing/jaeger)
# Upstream's Makefile stamps the version this way (`jaeger version` shows it).
build_tool jaeger "$ver" github.com/jaegertracing/jaeger/cmd/jaeger jaeger \
	"-X github.com/jaegertracing/jaeger/internal/version.latestVersion=$ver"
