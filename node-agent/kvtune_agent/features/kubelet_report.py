"""What a probe's kubelet section says, for every feature that reads it (the kubelet's own,
numad's warning where the static CPU manager pins CPUs, the text report): one reading, so two
features never judge the same kubelet settings differently."""

from __future__ import annotations

from kvtune_api.v1alpha1.host import KubeletReport


def known(kubelet: KubeletReport) -> bool:
    """The kubelet's settings are known: a kubelet or its configuration was found and read."""
    return kubelet.error is None and (
        kubelet.pid is not None or kubelet.config_path is not None
        or kubelet.drop_in_dir is not None)


def read_from(kubelet: KubeletReport) -> str:
    """What the settings were read from, for messages: files, then flags."""
    sources = [p for p in (kubelet.config_path, *kubelet.drop_in_paths) if p]
    sources += [f"the kubelet-arg entries of {path}" for path in kubelet.flag_files]
    if kubelet.flags:
        sources.append(f"the flags of kubelet pid {kubelet.pid}")
    elif kubelet.pid is not None and not sources:
        sources.append(f"the command line of kubelet pid {kubelet.pid} (no flags or files)")
    return ", ".join(sources) or "(nothing)"
