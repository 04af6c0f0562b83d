#!/usr/bin/env bash
# kubectl-versions.sh: run the kubectl tests with other kubectl releases
# than the one make test uses (v1.32, from .ci/run): by default 1.27, 1.30
# and 1.33, the oldest and newest clients Flotilla answers. Each release is
# built from k8s.io/kubectl (kubectl's own command, stamped with its
# version) into $KUBECTL_CACHE, then put first on PATH for the API server's
# kubectl tests and, on `flotilla up` and on a 3-node lab, TestUpAdmission
# and TestLabThreeNodes.
#
#   hack/kubectl-versions.sh              # 1.27.16 1.30.14 1.33.8
#   hack/kubectl-versions.sh 1.31.5       # any release k8s.io/kubectl has
#
# Needs root (the end-to-end tests run Podman and network namespaces) and
# the Go module proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS=-tags=remote,exclude_graphdriver_btrfs,btrfs_noversion,exclude_graphdriver_devicemapper,containers_image_openpgp
cache=${KUBECTL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla/kubectl}
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(1.27.16 1.30.14 1.33.8)

build() { # build VERSION: $cache/VERSION/kubectl
	local v=$1 dir="$cache/$1"
	[ -x "$dir/kubectl" ] && return 0
	echo "building kubectl v$v from k8s.io/kubectl v0.${v#1.}"
	local src
	src=$(mktemp -d)
	trap 'rm -rf "$src"' RETURN
	cat >"$src/main.go" <<'EOF'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
)

func main() { os.Exit(cli.Run(cmd.NewDefaultKubectlCommand())) }
EOF
	local lib=v0.${v#1.} minor=${v#1.}
	minor=${minor%%.*}
	(cd "$src" && GOFLAGS= go mod init kubectl >/dev/null 2>&1 &&
		GOFLAGS= go get "k8s.io/kubectl@$lib" "k8s.io/component-base@$lib" "k8s.io/metrics@$lib" >/dev/null &&
		mkdir -p "$dir" &&
		GOFLAGS=-mod=mod go build -o "$dir/kubectl" -ldflags "-X k8s.io/component-base/version.gitVersion=v$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" .)
}

failed=()
for v in "${versions[@]}"; do
	build "$v"
	echo "== kubectl $(PATH="$cache/$v:$PATH" kubectl version --client | head -1)"
	if ! PATH="$cache/$v:$PATH" go test -count=1 -timeout 20m -run 'TestKubectl|TestEventsWithKubectl|TestOpenAPIV2' ./cluster/apiserver/; then
		failed+=("$v: cluster/apiserver")
	fi
	if ! PATH="$cache/$v:$PATH" go test -count=1 -timeout 40m -run 'TestUpAdmission$|TestLabThreeNodes$' ./cmd/flotilla/; then
		failed+=("$v: cmd/flotilla")
	fi
done
if [ ${#failed[@]} -gt 0 ]; then
	printf 'failed with kubectl %s\n' "${failed[@]}"
	exit 1
fi
echo "every test passed with kubectl ${versions[*]}"
