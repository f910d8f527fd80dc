#!/usr/bin/env bash
# Builds Prometheus's own tools from the Go module proxy, so that the alerts and the
# Grafana dashboard are checked by the code Prometheus runs, not by a look-alike:
#   hack/promtool.sh               promtool (check rules, test rules)
#   hack/promtool.sh promql-check  hack/promql-check, Prometheus's PromQL parser behind
#                                  a small command line (see its main.go)
# Neither can be a requirement of this module: github.com/prometheus/prometheus would
# upgrade k8s.io/*, client_golang and others that the operator pins. The binaries
# are cached outside the clone, so only the first run on a machine pays for the
# build. Prints the path of the binary.
set -euo pipefail

PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"
CACHE_ROOT="${PROMTOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/defender-tenant-operator}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

case "${1:-promtool}" in
promtool)
  bin="$CACHE_ROOT/promtool/$PROMETHEUS_VERSION/promtool"
  if [[ ! -x "$bin" ]]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$(dirname "$bin")"
    {
      echo "Building promtool $PROMETHEUS_VERSION into $(dirname "$bin") (first run only; several minutes)."
      cd "$work"
      go mod init promtool-build >/dev/null 2>&1
      if ! go get "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" >go-get.log 2>&1; then
        cat go-get.log
        exit 1
      fi
      # The module's version is v0.3xx.y for Prometheus 3.xx.y; stamp the latter so
      # that promtool --version says which Prometheus it checks like.
      minor="${PROMETHEUS_VERSION#v0.}"
      release="3.${minor:1}"
      ldflags="-X github.com/prometheus/common/version.Version=$release -X github.com/prometheus/common/version.Branch=$PROMETHEUS_VERSION"
      go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" github.com/prometheus/prometheus/cmd/promtool
      mv "$bin.tmp" "$bin"
    } >&2
  fi
  ;;
promql-check)
  # Keyed by the checker's source as well as its requirements: it lives in this
  # repository and may change without a version bump.
  src="$repo/hack/promql-check"
  key="$(cat "$src/go.mod" "$src/go.sum" "$src"/*.go | sha256sum | cut -c1-16)"
  bin="$CACHE_ROOT/promql-check/$key/promql-check"
  if [[ ! -x "$bin" ]]; then
    mkdir -p "$(dirname "$bin")"
    {
      echo "Building hack/promql-check into $(dirname "$bin") (first run after a change; a minute or two)."
      cd "$src"
      go build -trimpath -o "$bin.tmp" .
      mv "$bin.tmp" "$bin"
    } >&2
  fi
  ;;
*)
  echo "usage: $0 [promtool|promql-check]" >&2
  exit 2
  ;;
esac

echo "$bin"
