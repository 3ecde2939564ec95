#!/usr/bin/env bash
# Builds hack/kubevirt-oracle (KubeVirt's own defaulting, VMI create admitter and memory overhead
# code, at the KubeVirt version its go.mod pins) into a versioned cache outside the git tree, for
# the tests that judge kvtune's VMI shaping. A cold build takes several minutes; afterwards the
# cached binary is reused in well under a second.
#
# Prints the path of the binary as its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=gobuild.sh
source "$here/gobuild.sh"
# Two modules in KubeVirt's graph are served by the proxy without a checksum database entry.
export GONOSUMDB="${GONOSUMDB:+$GONOSUMDB,}github.com/rhobs/operator-observability-toolkit"

dir="$here/kubevirt-oracle"
version="$(module_version "$dir" kubevirt.io/kubevirt)"
# The source's hash is part of the path, so that a change to the oracle itself rebuilds it.
source_hash="$(find "$dir" -type f -not -name "*.md" | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-12)"
out="$(kvtune_cache_dir)/kubevirt-oracle/$version-$source_hash"
gobuild "$out" kubevirt-oracle "$dir" .
echo "$out/kubevirt-oracle"
