#!/usr/bin/env bash
# Builds a real kube-apiserver, kube-controller-manager, etcd and kubectl from Go modules into a versioned
# cache outside the git tree, for the tests and for `kvtune demo`.
#
# Why from source: kind, k3d and setup-envtest download images or binaries, which this kind of
# machine cannot reach; the Go module proxy can. The versions are pinned by the go.mod files under
# hack/controlplane/ (the single place to change them); the cache path carries the version, so a
# bump builds afresh and an unchanged version reuses the cache in well under a second.
#
# Prints the directory holding the binaries as its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${KVTUNE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kvtune}"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=mod"

module_version() { # <module dir> <module path>
  (cd "$1" && go list -m -f '{{.Version}}' "$2")
}

k8s_version="$(module_version "$here/controlplane/k8s" k8s.io/kubernetes)"
etcd_version="$(module_version "$here/controlplane/etcd" go.etcd.io/etcd/server/v3)"
out="$cache/controlplane/k8s-$k8s_version-etcd-$etcd_version"
mkdir -p "$out"

build() { # <name> <module dir> <package> [ldflags]
  local name="$1" dir="$2" pkg="$3" ldflags="${4:-}"
  if [[ -x "$out/$name" ]]; then
    echo "control plane: $name cached at $out/$name" >&2
    return
  fi
  echo "control plane: building $name ($pkg); a cold build downloads modules and takes minutes..." >&2
  local start=$SECONDS
  # Build into a temporary name and rename, so an interrupted build never leaves a broken binary
  # that a later run would mistake for a cached one.
  (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$out/.$name.tmp" "$pkg")
  mv "$out/.$name.tmp" "$out/$name"
  echo "control plane: built $name in $((SECONDS - start)) s" >&2
}

minor="${k8s_version#v1.}"
minor="${minor%%.*}"
stamp="-X k8s.io/component-base/version.gitVersion=$k8s_version"
stamp+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"

build etcd "$here/controlplane/etcd" go.etcd.io/etcd/server/v3
build kube-apiserver "$here/controlplane/k8s" k8s.io/kubernetes/cmd/kube-apiserver "$stamp"
build kube-controller-manager "$here/controlplane/k8s" \
  k8s.io/kubernetes/cmd/kube-controller-manager "$stamp"
# kubectl: for `kubectl explain` in the tests and for poking at the demo cluster by hand.
build kubectl "$here/controlplane/k8s" k8s.io/kubernetes/cmd/kubectl "$stamp"

echo "$out"
