#!/usr/bin/env bash
# Builds, on this machine, every image deploy/compose.yaml names, so the
# stack runs with no registry at all:
#
#   switchboard/switchboard:dev   the five services and the CLI (deploy/Dockerfile)
#   hashicorp/consul:1.14.11      Consul built from its Go module (deploy/consul/Dockerfile)
#   jaegertracing/jaeger:2.13.0   Jaeger v2 built from its Go module (deploy/jaeger/Dockerfile)
#
# All three are FROM scratch with static (CGO_ENABLED=0) binaries. The Consul
# and Jaeger tags are derived from the versions pinned in tools/*/go.mod and
# checked against compose.yaml, so the two cannot drift apart.
#
# usage: scripts/images.sh [--ours]
#   --ours   build only switchboard/switchboard (with registry access, compose
#            pulls the official Consul and Jaeger images instead)
#
# Idempotent and quick on a warm cache: Go's build cache makes the binaries,
# and an image whose inputs (binaries, Dockerfile, config) are unchanged is
# not rebuilt (the inputs' digest is kept in a label).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

ours_only=false
case ${1:-} in
--ours) ours_only=true ;;
"") ;;
*)
	sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac

compose=$root/deploy/compose.yaml
image=${SWITCHBOARD_IMAGE:-switchboard/switchboard:dev}
services=(registry balancer resolver prober edge)

# Docker's CLI defaults to BuildKit, which needs the buildx plugin; the
# classic builder does everything these Dockerfiles need.
if ! docker buildx version >/dev/null 2>&1; then
	export DOCKER_BUILDKIT=0
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-images.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# rootfs DIR USER UID GID [DIRS...]: a minimal root file system for a scratch
# image: passwd/group naming the one user, /tmp with the sticky bit, and any
# further directories owned by nobody in particular but writable (1777).
rootfs() {
	local dir=$1/rootfs user=$2 uid=$3 gid=$4
	shift 4
	mkdir -p "$dir/etc" "$dir/tmp"
	chmod 1777 "$dir/tmp"
	printf 'root:x:0:0:root:/root:/sbin/nologin\n%s:x:%s:%s:%s:/tmp:/sbin/nologin\n' "$user" "$uid" "$gid" "$user" >"$dir/etc/passwd"
	printf 'root:x:0:\n%s:x:%s:\n' "$user" "$gid" >"$dir/etc/group"
	local d
	for d in "$@"; do
		mkdir -p "$dir/$d"
		chmod 1777 "$dir/$d"
	done
}

# build_image TAG DOCKERFILE CONTEXT: builds CONTEXT into TAG unless an image
# with the same inputs digest is already tagged TAG.
build_image() {
	local tag=$1 dockerfile=$2 ctx=$3 digest have start=$SECONDS
	cp "$dockerfile" "$ctx/Dockerfile"
	digest=$(cd "$ctx" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64)
	have=$(docker image inspect -f '{{index .Config.Labels "net.switchboard.inputs"}}' "$tag" 2>/dev/null || true)
	if [ "$have" = "$digest" ]; then
		echo "images: $tag is up to date"
		return
	fi
	echo "images: building $tag"
	local out old
	old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
	if ! out=$(docker build --label "net.switchboard.inputs=$digest" -t "$tag" "$ctx" 2>&1); then
		echo "$out" >&2
		echo "images: building $tag failed" >&2
		return 1
	fi
	# The image it replaces is left untagged: remove it unless a container
	# still uses it.
	if [ -n "$old" ] && [ "$(docker image inspect -f '{{len .RepoTags}}' "$old" 2>/dev/null)" = 0 ]; then
		docker image rm "$old" >/dev/null 2>&1 || true
	fi
	echo "images: built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'), $((SECONDS - start)) s)"
}

# compose_tag NAME: the tag compose.yaml gives image NAME.
compose_tag() {
	sed -n "s|^ *image: *$1:\\([^ ]*\\)\$|\\1|p" "$compose" | head -1
}

# Ours: the five services and the CLI, static, in one image.
ctx=$stage/switchboard
mkdir -p "$ctx/bin"
rootfs "$ctx" nonroot 65532 65532
mkdir -p "$ctx/state/balancer" "$ctx/state/prober"
chmod 0750 "$ctx/state/balancer" "$ctx/state/prober"
rev=$(git -C "$root" describe --always --dirty 2>/dev/null || echo dev)
pkgs=(./cmd/switchboard)
for s in "${services[@]}"; do
	pkgs+=("./services/$s/cmd/$s")
done
start=$SECONDS
# One go build for all (in the workspace), so the packages build in parallel;
# each binary is named after its directory.
(cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=$rev" -o "$ctx/bin/" "${pkgs[@]}")
echo "images: Go binaries built in $((SECONDS - start)) s"
build_image "$image" "$root/deploy/Dockerfile" "$ctx"

if $ours_only; then
	exit 0
fi

# Consul, from tools/consul at the pinned v1.14.x.
consul_ver=$(tool_version consul github.com/hashicorp/consul)
consul_tag=${consul_ver#v}
if [ "$(compose_tag hashicorp/consul)" != "$consul_tag" ]; then
	echo "images: compose.yaml names hashicorp/consul:$(compose_tag hashicorp/consul) but tools/consul pins $consul_ver" >&2
	exit 1
fi
"$root/scripts/build-consul.sh"
ctx=$stage/consul
mkdir -p "$ctx/bin"
rootfs "$ctx" consul 100 1000 consul/data consul/config
cp "$cache/consul-$consul_ver/consul" "$ctx/bin/consul"
build_image "hashicorp/consul:$consul_tag" "$root/deploy/consul/Dockerfile" "$ctx"

# Jaeger, from tools/jaeger. Its Go module's v1.x tags are cut with the v2.x
# releases of cmd/jaeger; the image tag is the v2 one, which the module's
# CHANGELOG pairs with the v1 version ("v1.76.0 / v2.13.0").
jaeger_ver=$(tool_version jaeger github.com/jaegertracing/jaeger)
"$root/scripts/build-jaeger.sh"
modcache=$(go env GOMODCACHE)
changelog=$modcache/github.com/jaegertracing/jaeger@$jaeger_ver/CHANGELOG.md
if [ ! -f "$changelog" ]; then
	(cd "$root/tools/jaeger" && GOWORK=off GOFLAGS=-mod=mod go mod download github.com/jaegertracing/jaeger)
fi
jaeger_tag=$(sed -n "s|^${jaeger_ver//./\\.} / v\\(2\\.[0-9.]*\\) .*|\\1|p" "$changelog" | head -1)
if [ -z "$jaeger_tag" ]; then
	echo "images: no v2 release paired with Jaeger $jaeger_ver in $changelog" >&2
	exit 1
fi
if [ "$(compose_tag jaegertracing/jaeger)" != "$jaeger_tag" ]; then
	echo "images: compose.yaml names jaegertracing/jaeger:$(compose_tag jaegertracing/jaeger) but tools/jaeger pins $jaeger_ver (= $jaeger_tag)" >&2
	exit 1
fi
ctx=$stage/jaeger
mkdir -p "$ctx/bin"
rootfs "$ctx" jaeger 10001 10001
cp "$cache/jaeger-$jaeger_ver/jaeger" "$ctx/bin/jaeger"
cp "$root/tools/jaeger/config.yaml" "$ctx/config.yaml"
build_image "jaegertracing/jaeger:$jaeger_tag" "$root/deploy/jaeger/Dockerfile" "$ctx"
