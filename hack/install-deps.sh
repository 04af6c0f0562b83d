#!/usr/bin/env bash
# Installs what Flotilla needs on Debian 12 when it is missing: Podman with
# runc, busybox-static (the example image is made from it), nftables,
# iproute2, git and gnupg (gitsync's tests sign commits with git commit -S),
# the cue command (for `cue vet` tests), and sops and age-keygen (gitsync's
# SOPS tests encrypt their fixtures with the real sops). Idempotent and quiet
# when everything is there.
set -euo pipefail

need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v git >/dev/null || need+=(git)
command -v gpg >/dev/null || need+=(gnupg)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "missing packages: ${need[*]} — run as root, or: sudo apt-get install -y ${need[*]}" >&2
		exit 1
	fi
	echo "installing ${need[*]} ..."
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cue="$(go env GOPATH)/bin/cue"
if [ ! -x "$cue" ]; then
	echo "installing the cue command (cuelang.org/go/cmd/cue@v0.17.1) ..."
	GOFLAGS= go install cuelang.org/go/cmd/cue@v0.17.1
fi

gobin="$(go env GOPATH)/bin"
if [ ! -x "$gobin/sops" ]; then
	echo "installing sops (github.com/getsops/sops/v3/cmd/sops@v3.13.3) ..."
	GOFLAGS= go install github.com/getsops/sops/v3/cmd/sops@v3.13.3
fi
if [ ! -x "$gobin/age-keygen" ]; then
	echo "installing age and age-keygen (filippo.io/age/cmd/...@v1.3.2) ..."
	GOFLAGS= go install filippo.io/age/cmd/...@v1.3.2
fi

# kubectl is not packaged for Debian 12; the tests that speak to the API as a
# Kubernetes user would (cluster/apiserver, cmd/flotilla's TestUpAdmission)
# skip without it, so say so up front.
if ! command -v kubectl >/dev/null; then
	echo "note: kubectl is not installed: the kubectl tests will be skipped (install kubectl v1.32 to run them)" >&2
fi
