#!/usr/bin/env bash
# Builds hack/fake-cri (a container runtime that answers only what a kubelet asks before it builds
# its resource managers) into a cache outside the git tree, for tests/realhost/test_kubelet.py,
# which starts the real kubelet on the configuration kvtune renders. Seconds once Go's module
# cache holds the control plane's modules (hack/build-control-plane.sh).
#
# Prints the path of the binary as its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=gobuild.sh
source "$here/gobuild.sh"

dir="$here/fake-cri"
source_hash="$(find "$dir" -type f | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-12)"
out="$(kvtune_cache_dir)/fake-cri/$source_hash"
gobuild "$out" fake-cri "$dir" .
echo "$out/fake-cri"
