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
# shellcheck source=gobuild.sh
source "$here/gobuild.sh"

k8s_version="$(module_version "$here/controlplane/k8s" k8s.io/kubernetes)"
etcd_version="$(module_version "$here/controlplane/etcd" go.etcd.io/etcd/server/v3)"
out="$(kvtune_cache_dir)/controlplane/k8s-$k8s_version-etcd-$etcd_version"
build() { gobuild "$out" "$@"; }

stamp="$(k8s_stamp "$here/controlplane/k8s")"

build etcd "$here/controlplane/etcd" go.etcd.io/etcd/server/v3
build kube-apiserver "$here/controlplane/k8s" k8s.io/kubernetes/cmd/kube-apiserver "$stamp"
build kube-controller-manager "$here/controlplane/k8s" \
  k8s.io/kubernetes/cmd/kube-controller-manager "$stamp"
# kubectl: for `kubectl explain` in the tests and for poking at the demo cluster by hand.
build kubectl "$here/controlplane/k8s" k8s.io/kubernetes/cmd/kubectl "$stamp"

echo "$out"
