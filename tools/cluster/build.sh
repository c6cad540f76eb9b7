#!/usr/bin/env bash
# Build the control plane of tests/cluster from Go modules, once per machine: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler (one `go build`, so their shared packages compile once)
# and kwok; and the Prometheus Operator's CRDs, generated from its Go API types by controller-gen
# as upstream generates them (crds/: monitoring.coreos.com_*.yaml). The cache folder is keyed by the pinned versions (the go.mod/go.sum files and the Go
# version), so a change of pin builds afresh and never mixes binaries. Prints the folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# The newest `go` directive of the pinned modules (kwok's and controller-tools' need 1.26).
need=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$here"/*/go.mod | sort -V | tail -1)
command -v go >/dev/null || { echo "error: go not found (Go $need or newer builds the control plane)" >&2; exit 2; }
have=$(go env GOVERSION | sed 's/^go//')
# A development build ("devel ...") has no comparable number: let `go build` judge it.
if [[ $have =~ ^[0-9] ]] && [ "$(printf '%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
  echo "error: Go $need or newer builds the control plane (tools/cluster/*/go.mod); this machine has Go $have" >&2
  exit 2
fi
key=$(cat "$here"/*/go.mod "$here"/*/go.sum <(go version) "$0" | sha256sum | cut -c1-16)
k8s=$(sed -n 's/^require k8s.io\/kubernetes \(v[^ ]*\)$/\1/p' "$here/kubernetes/go.mod")
cache=${CLUSTER_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/churn-mlops/cluster}
bin="$cache/kubernetes-$k8s-$key"
if [ -d "$bin/crds" ]; then echo "$bin"; exit 0; fi

tmp="$bin.partial.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
start=$(date +%s)
# The version stamp Kubernetes' own build writes (hack/lib/version.sh): without it the binaries
# say v0.0.0-master, and version-dependent defaults and `kubectl version` would be wrong.
pkg=k8s.io/component-base/version
minor=$(echo "$k8s" | cut -d. -f2)
ldflags="-s -w -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
ldflags+=" ${ldflags//k8s.io\/component-base\/version/k8s.io/client-go/pkg/version}"
echo "building the control plane (Kubernetes $k8s) into $bin; a cold build takes minutes" >&2
(cd "$here/kubernetes" && go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" .)
(cd "$here/kwok" && go build -trimpath -ldflags "-s -w" -o "$tmp/" sigs.k8s.io/kwok/cmd/kwok)
(cd "$here/crds" && go build -trimpath -ldflags "-s -w" -o "$tmp/controller-gen" sigs.k8s.io/controller-tools/cmd/controller-gen &&
  "$tmp/controller-gen" crd:crdVersions=v1,allowDangerousTypes=true output:crd:dir="$tmp/crds" \
    paths=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1)
mkdir -p "$cache"
rm -rf "$bin"
mv "$tmp" "$bin"
# Builds of older pins are dead weight (about 400 MB each).
find "$cache" -mindepth 1 -maxdepth 1 -name 'kubernetes-*' ! -path "$bin" -exec rm -rf {} +
echo "built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
