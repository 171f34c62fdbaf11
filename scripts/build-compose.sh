#!/usr/bin/env bash
# Builds the docker compose CLI plugin from the module in tools/compose, links
# it into .tools/bin/docker-compose and installs it as a Docker CLI plugin
# (${DOCKER_CONFIG:-~/.docker}/cli-plugins/docker-compose), so that
# `docker compose` runs deploy/compose.yaml. Idempotent: a second run prints
# one line.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

ver=$(tool_version compose github.com/docker/compose/v2)
# Upstream's Makefile stamps the version this way; without it the plugin
# reports "dev" and `docker compose version` cannot be checked.
build_tool compose "$ver" github.com/docker/compose/v2/cmd docker-compose \
	"-X github.com/docker/compose/v2/internal.Version=$ver"

plugins=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
mkdir -p "$plugins"
ln -sfn "$cache/compose-$ver/docker-compose" "$plugins/docker-compose"
