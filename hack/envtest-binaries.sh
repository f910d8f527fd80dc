#!/usr/bin/env bash
# Builds the kube-apiserver, etcd and kube-controller-manager binaries that the tests
# run from Go modules, because setup-envtest downloads prebuilt archives and that is
# not always possible. envtest needs the first two; the e2e suite also runs
# kube-controller-manager for its garbage collector. The binaries are cached outside
# the clone, keyed by version, and only the missing ones are built, so a cache made
# before a binary was added gets just that one. Prints the directory to use as
# KUBEBUILDER_ASSETS.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.0}"
STAGING_VERSION="v0.${K8S_VERSION#1.}"
CACHE_ROOT="${ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/defender-tenant-operator/envtest}"
ASSETS="$CACHE_ROOT/k8s-$K8S_VERSION"

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

# Each binary and the package it is built from.
declare -A packages=(
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [etcd]=go.etcd.io/etcd/server/v3
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
)
missing=()
for bin in kube-apiserver etcd kube-controller-manager; do
  [[ -x "$ASSETS/$bin" ]] || missing+=("$bin")
done
if ((${#missing[@]} == 0)); then
  echo "$ASSETS"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$ASSETS"
cd "$work"

{
  echo "Building ${missing[*]} for Kubernetes $K8S_VERSION into $ASSETS (once per machine; several minutes each)."
  go mod init envtest-binaries >/dev/null 2>&1
  gomod="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  # k8s.io/kubernetes points its staging modules at ./staging/src; map each to its published tag.
  replaces="$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\)[[:space:]]*=>[[:space:]]*\./staging/src/.*#\1#p' "$gomod" | sort -u)"
  {
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo "replace ("
    for m in $replaces; do echo "  $m => $m $STAGING_VERSION"; done
    echo ")"
  } >>go.mod
  # Only the binaries being built are required, so that adding one to an existing
  # cache resolves and downloads no more than it needs.
  {
    echo "//go:build tools"
    echo
    echo "package tools"
    echo
    echo "import ("
    for bin in "${missing[@]}"; do echo "	_ \"${packages[$bin]}\""; done
    echo ")"
  } >tools.go
  go mod tidy >/dev/null
  # Stamp the version so discovery and kubectl report the real one, not v0.0.0-master.
  ver="k8s.io/component-base/version"
  ldflags="-X $ver.gitVersion=v$K8S_VERSION -X $ver.gitMajor=${K8S_VERSION%%.*} -X $ver.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION") -X $ver.gitTreeState=clean"
  for bin in "${missing[@]}"; do
    start=$SECONDS
    go build -trimpath -ldflags "$ldflags" -o "$ASSETS/$bin.tmp" "${packages[$bin]}"
    # Renamed only once built, so an interrupted build is redone, not taken as cached.
    mv "$ASSETS/$bin.tmp" "$ASSETS/$bin"
    echo "Built $bin in $((SECONDS - start))s."
  done
} >&2

echo "$ASSETS"
