"""The processor, hardware virtualization and Pause-Loop Exiting (PLE).

PLE decides whether vCPUs may be overcommitted: without it a vCPU spinning on a lock held by a
descheduled vCPU burns a host CPU instead of yielding. No other tool reports it, so the answer
comes with the evidence it rests on, strongest first: the VMX capability MSR (Intel), the
`vmx flags` line of /proc/cpuinfo, the KVM module parameters; AMD's pause filter from its flags.
"""

from __future__ import annotations

from kvtune_api.v1alpha1.host import CpuReport, Evidence, PleReport, Problem, Tri

from ..hostfs import HostFS

CPUINFO = "/proc/cpuinfo"
#: vmxcap reads the same: IA32_VMX_PROCBASED_CTLS2 through the msr driver.
MSR_PATH = "/dev/cpu/0/msr"
MSR_PROCBASED_CTLS2 = 0x48B
#: Allowed-1 settings are the high dword; PAUSE-loop exiting is its bit 10.
PLE_ALLOWED_BIT = 42
INTEL_PARAMS = ("ple_gap", "ple_window", "ple_window_grow", "ple_window_shrink", "ple_window_max")
AMD_PARAMS = ("pause_filter_count", "pause_filter_thresh")


def _first_processor(text: str) -> dict[str, str]:
    """The `key : value` lines of the first processor block (all CPUs of a host match)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _module_params(
    fs: HostFS, module: str, names: tuple[str, ...], evidence: list[Evidence]
) -> dict[str, int | None] | None:
    """The module's parameters by name (None when the module is not loaded), noted as evidence."""
    base = f"/sys/module/{module}"
    if not fs.is_dir(base):
        evidence.append(Evidence(source=base, observed=f"{module} is not loaded"))
        return None
    params = {name: fs.read_int(f"{base}/parameters/{name}") for name in names}
    shown = " ".join(f"{k}={'?' if v is None else v}" for k, v in params.items())
    evidence.append(Evidence(source=f"{base}/parameters", observed=shown))
    return params


def _msr_says(fs: HostFS, evidence: list[Evidence]) -> Tri:
    raw = fs.read_bytes(MSR_PATH, MSR_PROCBASED_CTLS2, 8)
    if raw is None or len(raw) != 8:
        evidence.append(Evidence(source=MSR_PATH, observed="not readable (needs the msr module "
                                 "and CAP_SYS_RAWIO)"))
        return "Unknown"
    value = int.from_bytes(raw, "little")
    bit = (value >> PLE_ALLOWED_BIT) & 1
    evidence.append(Evidence(
        source=f"{MSR_PATH} @0x{MSR_PROCBASED_CTLS2:X}",
        observed=f"IA32_VMX_PROCBASED_CTLS2 = 0x{value:016x}, bit {PLE_ALLOWED_BIT} = {bit}",
    ))
    return "Yes" if bit else "No"


def _intel_ple(fs: HostFS, cpuinfo: dict[str, str]) -> PleReport:
    evidence: list[Evidence] = []
    supported = _msr_says(fs, evidence)
    vmx_flags = cpuinfo.get("vmx flags")
    if vmx_flags is None:
        evidence.append(Evidence(source=CPUINFO, observed="no 'vmx flags' line (older kernel)"))
    else:
        listed = "ple" in vmx_flags.split()
        evidence.append(Evidence(
            source=CPUINFO, observed=f"'vmx flags' {'lists' if listed else 'does not list'} ple"
        ))
        if supported == "Unknown":
            supported = "Yes" if listed else "No"
    params = _module_params(fs, "kvm_intel", INTEL_PARAMS, evidence) or {}
    gap = params.get("ple_gap")
    # The kernel forces ple_gap to 0 on hardware without PLE, so a non-zero gap proves support.
    if supported == "Unknown" and gap:
        supported = "Yes"
    return _ple("kvm_intel", supported, [gap] if params else [], params, evidence)


def _amd_ple(fs: HostFS, flags: set[str]) -> PleReport:
    evidence = [Evidence(source=CPUINFO, observed=", ".join(
        f"{flag} {'listed' if flag in flags else 'not listed'}"
        for flag in ("pausefilter", "pfthreshold")))]
    supported: Tri = "Yes" if "pausefilter" in flags else "No"
    params = _module_params(fs, "kvm_amd", AMD_PARAMS, evidence) or {}
    return _ple("kvm_amd", supported, list(params.values()), params, evidence)


def _ple(
    module: str,
    supported: Tri,
    governing: list[int | None],
    params: dict[str, int | None],
    evidence: list[Evidence],
) -> PleReport:
    """KVM exits on PAUSE loops only when the CPU can and every governing parameter is non-zero."""
    enabled: Tri
    if supported == "No":
        enabled = "No"
    elif not governing or None in governing:
        enabled = "Unknown"
    else:
        enabled = "Yes" if all(governing) else "No"
    return PleReport.model_validate({
        "supported": supported, "enabled": enabled, "module": module, "evidence": evidence,
        **{k: v for k, v in params.items() if v is not None},
    })


def probe(fs: HostFS) -> CpuReport:
    text = fs.read_text(CPUINFO) or ""
    info = _first_processor(text)
    flags = set(info.get("flags", "").split())
    if "flags" not in info:
        virtualization, ple = "Unknown", PleReport()
    elif "vmx" in flags:
        virtualization, ple = "VMX", _intel_ple(fs, info)
    elif "svm" in flags:
        virtualization, ple = "SVM", _amd_ple(fs, flags)
    else:
        virtualization = "None"
        ple = PleReport(supported="No", enabled="No", evidence=[
            Evidence(source=CPUINFO, observed="flags list neither vmx nor svm")
        ])
    return CpuReport(
        vendor=info.get("vendor_id"),
        model_name=info.get("model name"),
        family=_int(info.get("cpu family")),
        model=_int(info.get("model")),
        stepping=_int(info.get("stepping")),
        logical_cpus=sum(1 for line in text.splitlines() if line.startswith("processor")),
        virtualization=virtualization,
        hypervisor_guest="hypervisor" in flags,
        kvm_device=fs.exists("/dev/kvm"),
        ple=ple,
    )


def _ple_problems(ple: PleReport) -> list[Problem]:
    params = f"/sys/module/{ple.module}/parameters"
    if ple.supported == "No":
        return [Problem(
            severity="Warning", feature="PLE", path=CPUINFO,
            message="the CPU has no PAUSE-loop exiting: a vCPU spinning on a lock held by a "
            "descheduled vCPU burns a host CPU; do not overcommit vCPUs on this node",
        )]
    if ple.enabled == "No":
        off = "ple_gap" if ple.module == "kvm_intel" else "pause_filter_count/pause_filter_thresh"
        return [Problem(
            severity="Warning", feature="PLE", path=params,
            message=f"PAUSE-loop exiting is off ({off} is 0 in {params}) although the CPU "
            f"{'has it' if ple.supported == 'Yes' else 'may have it'}: remove the option "
            f"setting it from /etc/modprobe.d and reboot (the {ple.module} module cannot be "
            "reloaded while VMs run)",
        )]
    if ple.supported == "Unknown":
        return [Problem(
            severity="Info", feature="PLE", path=MSR_PATH,
            message=f"cannot tell whether the CPU has PAUSE-loop exiting: {MSR_PATH} is not "
            "readable and /proc/cpuinfo has no 'vmx flags' line; load the msr module and run "
            "the agent with CAP_SYS_RAWIO",
        )]
    if ple.enabled == "Unknown":
        return [Problem(
            severity="Info", feature="PLE", path=params,
            message=f"{ple.module} is not loaded, so whether KVM uses PAUSE-loop exiting is "
            f"unknown; it is loaded with the first VM (or: modprobe {ple.module})",
        )]
    return []


def check(cpu: CpuReport) -> list[Problem]:
    """Findings: no usable virtualization, no /dev/kvm, PLE missing or off."""
    if cpu.virtualization == "Unknown":
        return [Problem(
            severity="Warning", feature="CPU", path=CPUINFO,
            message=f"{CPUINFO} is missing or has no flags line, so hardware virtualization is "
            "unknown; check that --root points at the host's / with /proc mounted (x86 only)",
        )]
    if cpu.virtualization == "None":
        if cpu.hypervisor_guest:
            what = ("this host is itself a virtual machine without VMX or SVM (the 'hypervisor' "
                    "flag is set): KVM cannot run VMs here; enable nested virtualization on the "
                    "outer hypervisor or use a bare-metal node")
        else:
            what = ("the CPU flags list neither vmx nor svm: hardware virtualization is missing "
                    "or disabled in firmware; enable VT-x / AMD-V (SVM) in the BIOS setup")
        return [Problem(severity="Error", feature="CPU", path=CPUINFO, message=what)]
    problems = _ple_problems(cpu.ple)
    if not cpu.kvm_device:
        problems.insert(0, Problem(
            severity="Error", feature="CPU", path="/dev/kvm",
            message="/dev/kvm is missing although the CPU offers virtualization: load the KVM "
            "module (modprobe kvm_intel or kvm_amd) and check the agent sees the host's /dev",
        ))
    return problems
