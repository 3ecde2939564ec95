#!/usr/bin/env bash
# Builds what a real node adds to the control plane (tests/e2e, `make node-cluster`): kubelet,
# kube-scheduler and kube-proxy, from the same Go modules and into the same versioned cache
# directory as hack/build-control-plane.sh (which it runs first), so one version pin covers both.
# A cold kubelet build takes several minutes on two cores; the other two then take seconds.
#
# Prints the directory holding all the binaries as its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=gobuild.sh
source "$here/gobuild.sh"

out="$(bash "$here/build-control-plane.sh")"
stamp="$(k8s_stamp "$here/controlplane/k8s")"

for cmd in kubelet kube-scheduler kube-proxy; do
  gobuild "$out" "$cmd" "$here/controlplane/k8s" "k8s.io/kubernetes/cmd/$cmd" "$stamp"
done

echo "$out"
