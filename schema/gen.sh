#!/usr/bin/env bash
# Regenerates schema/cue.mod/gen: the CUE definitions of the Kubernetes API
# types that schema/*.cue builds on. `make schema` runs it; the output is
# committed so that neither builds nor `cue vet` users need this step.
#
# `cue get go` reads the Go packages through the enclosing Go module (the
# Flotilla module, which requires k8s.io/api), so the versions are go.mod's.
set -euo pipefail

CUE_VERSION=v0.17.1
PACKAGES=(
	k8s.io/api/core/v1
	k8s.io/api/apps/v1
	k8s.io/api/networking/v1
	k8s.io/api/storage/v1
	k8s.io/api/rbac/v1
	k8s.io/apimachinery/pkg/apis/meta/v1
)

cd "$(dirname "$0")"

cue=${CUE:-}
if [[ -z $cue ]]; then
	cue=$(command -v cue || true)
fi
if [[ -z $cue ]]; then
	cue="$(go env GOPATH)/bin/cue"
fi
if [[ ! -x $cue ]] || ! "$cue" version | grep -q "cue version $CUE_VERSION\$"; then
	echo "schema/gen.sh: installing cue $CUE_VERSION" >&2
	GOFLAGS= go install "cuelang.org/go/cmd/cue@$CUE_VERSION"
	cue="$(go env GOPATH)/bin/cue"
fi

rm -rf cue.mod/gen
"$cue" get go "${PACKAGES[@]}"

# The trap: `cue get go` writes every `json:",inline"` Go embedding as a named
# field (`TypeMeta: metav1.#TypeMeta`, `VolumeSource: #VolumeSource`, ...),
# which makes `apiVersion`, `emptyDir` and friends "field not allowed". In the
# API packages such a field is the only one whose capitalised name equals its
# type's; rewrite each into an embedding.
find cue.mod/gen/k8s.io/api cue.mod/gen/k8s.io/apimachinery/pkg/apis -name '*.cue' -print0 |
	xargs -0 sed -E -i 's/^([[:space:]]*)([A-Z][A-Za-z0-9]*)\??:[[:space:]]+(([a-z0-9]+\.)?#\2)([[:space:]]+@.*)?$/\1\3/'

# The second trap: a Go []byte is written `bytes`, but in JSON and YAML it
# is a base64 string (Secret data, ConfigMap binaryData), so every manifest
# that had one was refused. Make it a string (flotilla.cue checks base64).
find cue.mod/gen/k8s.io/api cue.mod/gen/k8s.io/apimachinery/pkg/apis -name '*.cue' -print0 |
	xargs -0 sed -E -i 's/([[:space:]])bytes(\}? @go\()/\1string\2/'
if grep -rEn '[[:space:]]bytes\}? @go\(' cue.mod/gen; then
	echo "schema/gen.sh: []byte fields left as CUE bytes" >&2
	exit 1
fi

if grep -rEn '^[[:space:]]*([A-Z][A-Za-z0-9]*)\??:[[:space:]]+([a-z0-9]+\.)?#\1\b' \
	cue.mod/gen/k8s.io/api cue.mod/gen/k8s.io/apimachinery/pkg/apis; then
	echo "schema/gen.sh: inline embeddings left unrewritten" >&2
	exit 1
fi
