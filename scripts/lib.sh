# shellcheck shell=bash
# Shared helpers for the scripts that build third-party programs from the Go
# modules under tools/<name>/. Source it; do not run it.
#
# Each program is built once into a versioned folder of the user cache,
#   ${SWITCHBOARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard}/<name>-<version>/
# and linked into .tools/bin of the work tree. The version is read from the
# tool module's go.mod, so bumping it there is all it takes to rebuild.

# root: the work tree, found from this file's own location.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SWITCHBOARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard}
bin=$root/.tools/bin

# tool_version NAME MODULE: prints the version of MODULE that tools/NAME/go.mod
# requires (the plain `require` line; tidy keeps one per module).
tool_version() {
	local mod=$root/tools/$1/go.mod ver
	ver=$(awk -v m="$2" '
		$1 == "require" && $2 == m { print $3; exit }
		$1 == m { print $2; exit }
	' "$mod")
	if [ -z "$ver" ]; then
		echo "$mod does not require $2" >&2
		return 1
	fi
	echo "$ver"
}

# build_tool NAME VERSION PACKAGE [OUT [LDFLAGS]]: builds PACKAGE from the
# module in tools/NAME into $cache/NAME-VERSION/OUT (OUT defaults to NAME)
# unless it is already there, then links it into .tools/bin/OUT. LDFLAGS are
# added to the linker flags (upstream stamps versions with -X). Prints one
# line when the binary is cached.
#
# The build uses the committed go.mod and go.sum as they are (-mod=readonly):
# a stale go.sum fails the build instead of being rewritten behind our back.
# GOWORK=off keeps the module out of the repo's go.work. The binary is written
# to a temporary name and renamed, so an interrupted build never looks cached.
build_tool() {
	local name=$1 ver=$2 pkg=$3 out=${4:-$1} ldflags=${5:-}
	local dir=$cache/$name-$ver
	mkdir -p "$bin" "$dir"
	if [ -x "$dir/$out" ]; then
		echo "$name $ver: cached in $dir"
	else
		echo "$name $ver: building $pkg into $dir (takes minutes on a cold cache)"
		local start=$SECONDS tmp=$dir/.$out.tmp.$$
		# shellcheck disable=SC2064
		trap "rm -f '$tmp'" EXIT
		# A cold module cache prints hundreds of "go: downloading" lines;
		# drop those and keep every other message. pipefail keeps go's status.
		(
			cd "$root/tools/$name" || exit 1
			GOWORK=off CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath" \
				go build -ldflags="-s -w $ldflags" -o "$tmp" "$pkg" 2>&1
		) | { grep -v '^go: downloading ' || true; } >&2
		mv -f "$tmp" "$dir/$out"
		trap - EXIT
		echo "$name $ver: built in $((SECONDS - start)) s"
	fi
	ln -sfn "$dir/$out" "$bin/$out"
}
