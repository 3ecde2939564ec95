#!/usr/bin/env bash
# Everything a fresh machine needs to run kvtune's demo and tests: Debian packages, a virtualenv
# with the project and its test tools, and the control-plane binaries and the KubeVirt oracle
# (built from Go modules).
# Each step is skipped when already done, so running it before every demo or test costs ~1 s.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# libvirt-dev, pkg-config and gcc build libvirt-python; numactl is compared against in the probe
# bench.
packages=(libvirt-dev pkg-config numactl gcc)
# The realhost tier (tests/realhost): the real tools that make and judge disk signatures and
# links (iproute2), QEMU/KVM under the libvirt daemon, and perf (its task-clock is the
# interference tests' and bench's second independent reading of a vCPU's time on a CPU). Only
# where it runs (root and /dev/kvm), so a laptop's make test does not install a hypervisor.
if [[ $(id -u) -eq 0 && -e /dev/kvm ]]; then
  packages+=(util-linux iproute2 e2fsprogs xfsprogs lvm2 mdadm cryptsetup-bin gdisk
             qemu-system-x86 libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
             linux-perf)
fi
# The real-node tier (tests/e2e, `make node-cluster`): a container runtime and CNI plugins for
# the kubelet, and the tools that build kvtune's image without a registry. Only where the tier
# runs (root, /dev/kvm and the overlay filesystem containerd's snapshotter needs).
node_tier=false
if [[ $(id -u) -eq 0 && -e /dev/kvm ]] && grep -qw overlay /proc/filesystems; then
  node_tier=true
  packages+=(containerd runc containernetworking-plugins iptables conntrack buildah mmdebstrap)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  # A package this release does not have is named, not left to a cryptic apt error.
  for p in "${missing[@]}"; do
    if [[ -z "$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ && $2 != "(none)"')" ]]; then
      echo "setup: Debian package $p is not available here (apt-cache policy $p)" >&2
      exit 1
    fi
  done
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >&2
fi
# libvirt's qemu driver will not start without its built-in user, even when the tier's qemu.conf
# runs QEMU as root (as libvirt-daemon-system's postinst, which needs systemd, would create it).
if [[ $(id -u) -eq 0 && -e /dev/kvm ]] && ! getent passwd libvirt-qemu >/dev/null; then
  echo "setup: creating the system user libvirt-qemu" >&2
  useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin \
    --user-group libvirt-qemu
fi

python="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $($python --version)" >&2
  "$python" -m venv .venv
fi
# Reinstall only when the dependency list changed.
stamp=".venv/.kvtune-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "setup: installing kvtune and its test tools into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install -q -e ".[test]" >&2
  echo "$want" > "$stamp"
fi
# kvtune's own modules compiled, as the image has them (Dockerfile): where PYTHONDONTWRITEBYTECODE
# is set, as on CI machines, every `kvtune` run would otherwise compile them again (about 10 ms
# of `kvtune probe`, bench/probe_bench.py). Up-to-date files are skipped.
.venv/bin/python -m compileall -q api node-agent operator cli >&2

bin_dir="$(bash hack/build-control-plane.sh)"
# KubeVirt's own admission and overhead code, the judge of kvtune's VMI shaping in the tests.
oracle="$(bash hack/build-kubevirt-oracle.sh)"
if $node_tier; then
  # kubelet, kube-scheduler and kube-proxy beside the control plane, and the node's images
  # (kvtune's from the Dockerfile), each cached by version or by a hash of its inputs.
  bin_dir="$(bash hack/build-node.sh)"
  bash hack/build-node-images.sh >/dev/null
fi
echo "setup: ready (control plane binaries in $bin_dir, KubeVirt oracle at $oracle)" >&2
