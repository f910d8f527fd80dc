#!/usr/bin/env bash
# Builds the kube-apiserver and etcd binaries that envtest needs from Go modules,
# because setup-envtest downloads prebuilt archives and that is not always possible.
# The binaries are cached outside the clone, keyed by version, so only the first run
# on a machine pays for the build. Prints the directory to use as KUBEBUILDER_ASSETS.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.0}"
STAGING_VERSION="v0.${K8S_VERSION#1.}"
CACHE_ROOT="${ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/defender-tenant-operator/envtest}"
ASSETS="$CACHE_ROOT/k8s-$K8S_VERSION"

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi
if [[ -x "$ASSETS/kube-apiserver" && -x "$ASSETS/etcd" ]]; then
  echo "$ASSETS"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$ASSETS"
cd "$work"

{
  echo "Building kube-apiserver and etcd for Kubernetes $K8S_VERSION into $ASSETS (first run only; several minutes)."
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
  cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
GO
  go mod tidy >/dev/null
  # Stamp the version so discovery and kubectl report the real one, not v0.0.0-master.
  ver="k8s.io/component-base/version"
  ldflags="-X $ver.gitVersion=v$K8S_VERSION -X $ver.gitMajor=${K8S_VERSION%%.*} -X $ver.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION") -X $ver.gitTreeState=clean"
  go build -trimpath -ldflags "$ldflags" -o "$ASSETS/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  go build -trimpath -o "$ASSETS/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$ASSETS/kube-apiserver.tmp" "$ASSETS/kube-apiserver"
  mv "$ASSETS/etcd.tmp" "$ASSETS/etcd"
} >&2

echo "$ASSETS"
