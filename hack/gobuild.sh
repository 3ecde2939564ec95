# Shared by the scripts that build Go binaries into kvtune's cache (sourced, not run).
#
# gobuild <out dir> <name> <module dir> <package> [ldflags]: builds <package> from <module dir>
# into <out dir>/<name> unless it is already there. The build writes a temporary name and renames
# it, so an interrupted build never leaves a broken binary a later run would take for a cached one;
# the temporary name is the build's own ($$), so two builds at once (make test in one shell, pytest
# in another) each rename a whole binary instead of one moving away the other's.
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=mod"

gobuild() {
  local out="$1" name="$2" dir="$3" pkg="$4" ldflags="${5:-}"
  if [[ -x "$out/$name" ]]; then
    echo "$name: cached at $out/$name" >&2
    return
  fi
  echo "$name: building $pkg; a cold build downloads modules and takes minutes..." >&2
  local start=$SECONDS
  mkdir -p "$out"
  local tmp="$out/.$name.$$.tmp"
  (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$tmp" "$pkg")
  mv -f "$tmp" "$out/$name"
  echo "$name: built in $((SECONDS - start)) s" >&2
}

# module_version <module dir> <module path>: the version of <module path> that dir's go.mod pins.
module_version() {
  (cd "$1" && go list -m -f '{{.Version}}' "$2")
}

kvtune_cache_dir() {
  echo "${KVTUNE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kvtune}"
}

# k8s_stamp <module dir>: the -ldflags that give Kubernetes binaries built from <module dir> the
# version its go.mod pins (otherwise they report v0.0.0, which kubectl and kubelets reject).
k8s_stamp() {
  local version minor
  version="$(module_version "$1" k8s.io/kubernetes)"
  minor="${version#v1.}"
  minor="${minor%%.*}"
  echo "-X k8s.io/component-base/version.gitVersion=$version" \
    "-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
}
