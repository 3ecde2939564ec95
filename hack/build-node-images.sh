#!/usr/bin/env bash
# Builds the images the real-node tier runs (tests/e2e, `make node-cluster`) without a registry:
#
#   pause   the pod sandbox's process, a tiny static C program (what registry.k8s.io/pause is);
#   python  Debian bookworm with Python, by mmdebstrap from the mirror apt already uses, standing
#           in for the python:*-slim image the Dockerfile names (no registry is reachable here);
#   kvtune  the project's Dockerfile, as is, built by buildah with PYTHON_IMAGE=<python>.
#
# Each is saved as a docker-archive in kvtune's cache, named by a hash of its inputs (its recipe
# below, and for kvtune every file of the build context), so an unchanged input reuses the
# archive in well under a second and a change of kvtune's code builds afresh. buildah keeps its
# layers under the cache too, so a rebuild after a code change reuses the dependency layers the
# Dockerfile orders first; after each build, every layer no current image stands on (earlier
# builds' code layers, earlier bases) is removed, so the cache holds about one build and does not
# grow with every change of the code.
#
# Prints one line per image on stdout: `<name> <reference> <archive>`; progress goes to stderr.
# Needs root (mmdebstrap, buildah's chroot isolation) and the Debian packages buildah and
# mmdebstrap, which `make setup` installs where the tier can run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=gobuild.sh
source "$here/gobuild.sh"

cache="$(kvtune_cache_dir)/node-images"
storage="$(kvtune_cache_dir)/buildah"
mkdir -p "$cache" "$storage"
# One build at a time per cache (every checkout shares it): a prune must not remove the layers
# another checkout's build is using.
exec {lock}>"$storage/build.lock"
flock "$lock"
# What the Dockerfile needs of its base: python (python-is-python3), venv, and CA certificates.
# No headers and no pip: the builder stage installs python3-dev itself where the base lacks
# Python's headers, and builds with the venv's pip, so the final image carries neither.
python_packages="python3,python3-venv,python-is-python3,ca-certificates"
suite=bookworm

# buildah with its storage in the cache, not in /var/lib/containers: the tier leaves nothing on
# the host outside kvtune's cache. chroot isolation: no runc, whose sandbox setup this kind of VM
# refuses (it withholds CAP_SYS_RESOURCE from root), and the host's network for apt and pip.
bah() {
  buildah --root "$storage/root" --runroot "$storage/run" --storage-driver overlay "$@"
}

hash_of() { sha256sum | cut -c1-16; }

# prune <reference>...: remove every image of buildah's storage but the ones named and what
# they stand on. kvtune's other tagged images (earlier bases, pause images) go first; then the
# untagged ones no image stands on ("dangling": an earlier build's last layer), again and again,
# since removing one leaves its parent dangling, down to the layers a named image still uses.
# An earlier base that an earlier build still stood on is freed by the second pass.
prune() {
  local keep=("$@") ref pass
  for pass in 1 2; do
    while read -r ref; do
      [[ " ${keep[*]} " == *" $ref "* ]] || bah rmi "$ref" >/dev/null 2>&1 || (( pass == 1 )) \
        || step "could not remove $ref from buildah's cache ($storage); remove it by hand"
    done < <(bah images --format '{{.Name}}:{{.Tag}}' | grep -E '^localhost/kvtune-' || true)
    while [[ -n "$(bah images --all --quiet --filter dangling=true)" ]]; do
      bah rmi --prune >/dev/null
    done
  done
}

# save <reference> <archive>: the image as a docker-archive that `ctr images import` reads,
# written under a temporary name so an interrupted save never passes for a cached one.
save() {
  local ref="$1" archive="$2"
  rm -f "$archive.tmp"
  bah push -q "$ref" "docker-archive:$archive.tmp:$ref" >&2
  mv -f "$archive.tmp" "$archive"
  # Earlier builds' archives of the same image are of no further use (the hash names inputs).
  local file="${archive##*/}"
  find "$cache" -maxdepth 1 -name "${file%-*}-*.tar" ! -name "$file" -delete
}

step() { echo "node images: $*" >&2; }

# --- pause ------------------------------------------------------------------------------------
pause_source='#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
/* The pod sandbox: holds the pod'"'"'s namespaces until told to stop, reaping orphans. */
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, stop); signal(SIGTERM, stop); signal(SIGCHLD, reap);
  for (;;) pause();
}'
pause_flags="-static -Os"
pause_hash="$(echo "$pause_source $pause_flags" | hash_of)"
pause_ref="localhost/kvtune-pause:$pause_hash"
pause_archive="$cache/pause-$pause_hash.tar"
if [[ ! -f "$pause_archive" ]]; then
  step "building the pause image (gcc -static)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "$pause_source" > "$tmp/pause.c"
  gcc $pause_flags -o "$tmp/pause" "$tmp/pause.c"
  c="$(bah from scratch)"
  bah copy "$c" "$tmp/pause" /pause >&2
  bah config --entrypoint '["/pause"]' "$c" >&2
  bah commit -q --rm "$c" "$pause_ref" >&2
  save "$pause_ref" "$pause_archive"
  rm -rf "$tmp"
  trap - EXIT
else
  step "pause image cached at $pause_archive"
fi
echo "pause $pause_ref $pause_archive"

# --- python base ------------------------------------------------------------------------------
python_options=(--variant=minbase --include="$python_packages"
                --aptopt='Acquire::Check-Valid-Until "false"')
python_hash="$(echo "$suite ${python_options[*]}" | hash_of)"
python_ref="localhost/kvtune-python:$python_hash"
python_archive="$cache/python-$python_hash.tar"
if [[ ! -f "$python_archive" ]]; then
  step "building the Python base image (mmdebstrap $suite: $python_packages); about a minute..."
  start=$SECONDS
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # The mirror apt already uses on this machine (no argument: mmdebstrap reads the host's
  # sources); minbase: no init system, no extra tools.
  mmdebstrap --quiet "${python_options[@]}" "$suite" "$tmp/rootfs.tar" >&2
  c="$(bah from scratch)"
  bah add "$c" "$tmp/rootfs.tar" / >&2
  bah config --cmd '["python3"]' --env LANG=C.UTF-8 "$c" >&2
  bah commit -q --rm "$c" "$python_ref" >&2
  save "$python_ref" "$python_archive"
  rm -rf "$tmp"
  trap - EXIT
  step "Python base image built in $((SECONDS - start)) s"
else
  step "Python base image cached at $python_archive"
fi
echo "python $python_ref $python_archive"

# --- kvtune, from the Dockerfile --------------------------------------------------------------
# Inputs: every file the Dockerfile copies (tracked or not, as the build context holds them),
# the Dockerfile, the base and the build's options.
cd "$repo"
# The host's CA bundle, for pip and apt behind a TLS-intercepting proxy; Debian's pip reads it.
kvtune_options=(--quiet --layers --isolation chroot
                --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro
                --build-arg "PYTHON_IMAGE=$python_ref")
inputs=(Dockerfile image-constraints.txt pyproject.toml README.md api node-agent operator cli)
kvtune_hash="$( {
  git ls-files -z --cached --others --exclude-standard -- "${inputs[@]}" \
    | sort -z | xargs -0 sha256sum
  echo "$python_ref ${kvtune_options[*]}"
} | hash_of)"
kvtune_ref="docker.io/library/kvtune:dev"
builder_ref="localhost/kvtune-builder:cache"
kvtune_archive="$cache/kvtune-$kvtune_hash.tar"
if [[ ! -f "$kvtune_archive" ]]; then
  step "building kvtune's image from the Dockerfile (buildah bud); a cold build takes minutes..."
  start=$SECONDS
  # The base comes from its archive when buildah's storage no longer holds it.
  bah inspect --type image "$python_ref" >/dev/null 2>&1 \
    || bah pull -q "docker-archive:$python_archive" >&2
  bah bud "${kvtune_options[@]}" --tag "$kvtune_ref" . >&2
  # The builder stage's dependency layers (compiler, pip install) are the cache worth keeping:
  # named, or prune would take them with the stage's last layer. All cached, seconds.
  bah bud "${kvtune_options[@]}" --target builder --tag "$builder_ref" . >&2
  save "$kvtune_ref" "$kvtune_archive"
  prune "$pause_ref" "$python_ref" "$builder_ref"
  step "kvtune image built in $((SECONDS - start)) s; buildah's cache: $(du -sh "$storage" | cut -f1)"
else
  step "kvtune image cached at $kvtune_archive"
fi
echo "kvtune $kvtune_ref $kvtune_archive"
