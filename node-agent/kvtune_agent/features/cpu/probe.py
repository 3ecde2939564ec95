"""The processor, how KVM runs guests on it, and Pause-Loop Exiting (PLE).

Whether KVM can run guests is not a cpuinfo flag: it is /dev/kvm and the KVM module that serves
it (/sys/module: kvm_intel, kvm_amd, kvm_pvm, kvm_hv, kvm_pr, or kvm itself on arm64 and s390x,
where it is the whole of KVM). Each architecture says in its own cpuinfo what it offers: x86 in
`flags` (vmx, svm), arm64 in `Features` (nothing about EL2: /dev/kvm tells whether the kernel
booted there), s390x in `features` (sie, the facility KVM needs), POWER in `cpu`. kvm_pvm runs
guests with no hardware virtualization at all (inside a VM without nested VT-x, for one).

PLE decides whether vCPUs may be overcommitted: without it a vCPU spinning on a lock held by a
descheduled vCPU burns a host CPU instead of yielding. No other tool reports it, so the answer
comes with the evidence it rests on, strongest first: the VMX capability MSR (Intel), the
`vmx flags` line of /proc/cpuinfo, the KVM module parameters; AMD's pause filter from its flags,
or from the family where the kernel is too old to print it. PLE is an x86 notion: elsewhere the
report says what plays its part instead of calling it missing.
"""

from __future__ import annotations

import typing as t

from kvtune_api.v1alpha1.host import (
    CpuReport,
    Evidence,
    PleReport,
    Problem,
    Tri,
    Virtualization,
)

from ...host.hostfs import HostFS

CPUINFO = "/proc/cpuinfo"
#: vmxcap reads the same: IA32_VMX_PROCBASED_CTLS2 through the msr driver.
MSR_PATH = "/dev/cpu/0/msr"
MSR_PROCBASED_CTLS2 = 0x48B
#: Allowed-1 settings are the high dword; PAUSE-loop exiting is its bit 10.
PLE_ALLOWED_BIT = 42
INTEL_PARAMS = ("ple_gap", "ple_window", "ple_window_grow", "ple_window_shrink", "ple_window_max")
AMD_PARAMS = ("pause_filter_count", "pause_filter_thresh")
Architecture = t.Literal["x86", "arm64", "s390", "power", "riscv", "loongarch"]
#: The KVM modules that run guests, in the order they are looked for; `kvm` alone is the whole
#: of KVM on arm64, s390x, riscv64 and loongarch64 only (on x86 and POWER it is the core the
#: others plug into).
KVM_MODULES = ("kvm_intel", "kvm_amd", "kvm_pvm", "kvm_hv", "kvm_pr")
WHOLE_KVM: frozenset[str] = frozenset({"arm64", "s390", "riscv", "loongarch"})
#: The SVM feature flags a kernel prints beside svm when it prints any (pausefilter among them).
SVM_FEATURES = frozenset({
    "npt", "lbrv", "svm_lock", "nrip_save", "tsc_scale", "vmcb_clean", "flushbyasid",
    "decodeassists", "pfthreshold", "avic", "v_vmsave_vmload", "vgif",
})
#: AMD families whose every CPU has the pause filter (family 15h on: CPUID 8000_000A EDX[10]).
AMD_PAUSE_FILTER_FAMILY = 0x15
#: arm64's `CPU implementer` codes, named as lscpu names them (arm64 cpuinfo has no vendor).
ARM_IMPLEMENTERS = {
    0x41: "ARM", 0x42: "Broadcom", 0x43: "Cavium", 0x46: "Fujitsu", 0x48: "HiSilicon",
    0x4E: "NVIDIA", 0x50: "APM", 0x51: "Qualcomm", 0x61: "Apple", 0x6D: "Microsoft",
    0xC0: "Ampere",
}
#: What makes a waiting vCPU yield where KVM does not run on VT-x or AMD-V.
PLE_EQUIVALENT: dict[Virtualization, str] = {
    "ARM": "arm64 has no PAUSE loop to exit on: its spinlocks wait with WFE, and KVM traps WFE "
    "(by default while other tasks wait for the physical CPU), so a waiting vCPU yields as PLE "
    "makes it yield on x86; nothing to turn on",
    "SIE": "s390 guests give up a spinning vCPU themselves (DIAGNOSE 0x9C directed yield, "
    "0x44), which KVM honours; nothing to turn on",
    "POWER": "POWER guests give up a spinning vCPU themselves (the H_CONFER hypercall of "
    "their paravirtual spinlocks), which KVM honours; nothing to turn on",
}
#: Why nothing kvtune can check stands in for PLE, where nothing does.
NO_PLE_EQUIVALENT: dict[Virtualization, str] = {
    "PVM": "kvm_pvm runs the guests without VT-x or AMD-V, so there is no VM exit on PAUSE; "
    "only a guest's paravirtual spinlocks make a waiting vCPU yield, so a vCPU spinning on a "
    "descheduled lock holder burns its host CPU",
    "RISCV": "RISC-V has no VM exit on a spin loop: KVM gives up the CPU of a vCPU that waits "
    "(WFI), not of one that spins with pause, a hint (Zihintpause) it never sees, so a vCPU "
    "spinning on a descheduled lock holder can burn its host CPU",
    "LoongArch": "LoongArch has no VM exit on a spin loop: KVM gives up the CPU of a vCPU that "
    "waits (idle), not of one that spins, so a vCPU spinning on a descheduled lock holder can "
    "burn its host CPU",
}


def _first_processor(text: str) -> dict[str, str]:
    """The `key : value` lines of the first processor block (all CPUs of a host match), with
    those of a header block before it (loongarch64 opens with `system type` alone; s390x's
    header holds the processors' lines itself)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if any(key.startswith("processor") for key in fields):
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
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


def _pause_filter(flags: set[str], family: int | None, guest: bool) -> tuple[Tri, str]:
    """Whether the AMD CPU has the pause filter, and why that is the answer. Kernels before
    the SVM feature flags print none of them, so a missing pausefilter says nothing there;
    the family does, on bare metal (a hypervisor may hide the feature from its guests)."""
    if "pausefilter" in flags:
        return "Yes", "pausefilter listed"
    if flags & SVM_FEATURES:
        return "No", "pausefilter not listed, though other SVM features are"
    if family is not None and family >= AMD_PAUSE_FILTER_FAMILY and not guest:
        return "Yes", (f"no SVM feature flags (a kernel too old to print them); family "
                       f"{family:#x} CPUs all have the pause filter")
    return "Unknown", ("no SVM feature flags (a kernel too old to print them), and family "
                       f"{'unknown' if family is None else hex(family)}"
                       f"{' in a VM' if guest else ''} does not settle it")


def _amd_ple(fs: HostFS, flags: set[str], info: dict[str, str], guest: bool) -> PleReport:
    supported, why = _pause_filter(flags, _int(info.get("cpu family")), guest)
    evidence = [Evidence(source=CPUINFO, observed=why)]
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
    elif not all(governing):
        enabled = "No"
    else:
        # Parameters that allow it say nothing where the CPU may not have it.
        enabled = "Unknown" if supported == "Unknown" else "Yes"
    return PleReport.model_validate({
        "supported": supported, "enabled": enabled, "module": module, "evidence": evidence,
        **{k: v for k, v in params.items() if v is not None},
    })


def _architecture(info: dict[str, str]) -> Architecture | None:
    """The architecture whose /proc/cpuinfo this is, by the fields only it writes."""
    if "flags" in info:
        return "x86"
    if "loongarch" in info.get("ISA", "") or info.get("CPU Family", "").startswith("Loongson"):
        return "loongarch"  # before arm64: both write Features
    if info.get("isa", "").startswith(("rv32", "rv64")):
        return "riscv"
    if "Features" in info:
        return "arm64"
    if "features" in info or info.get("vendor_id", "").startswith("IBM/S390"):
        return "s390"
    if info.get("cpu", "").startswith("POWER"):
        return "power"
    return None


def _vendor(info: dict[str, str]) -> str | None:
    """vendor_id (x86, s390), else arm64's implementer by name, else loongarch64's family."""
    if info.get("CPU Family", "").startswith("Loongson"):
        return "Loongson"
    implementer = info.get("CPU implementer")
    if "vendor_id" in info or implementer is None:
        return info.get("vendor_id")
    try:
        return ARM_IMPLEMENTERS.get(int(implementer, 16), implementer)
    except ValueError:
        return implementer


def _kvm_module(fs: HostFS, architecture: Architecture | None) -> str | None:
    """The loaded KVM module that runs guests: a directory under /sys/module, which built-in
    modules with parameters have too (kvm_pvm, arm64's kvm)."""
    for module in KVM_MODULES:
        if fs.is_dir(f"/sys/module/{module}"):
            return module
    whole = architecture in WHOLE_KVM and fs.is_dir("/sys/module/kvm")
    return "kvm" if whole else None


def _virtualization(
    architecture: Architecture | None, info: dict[str, str], module: str | None
) -> Virtualization:
    flags = set(info.get("flags", "").split())
    if architecture == "x86":
        if "vmx" in flags:
            return "VMX"
        if "svm" in flags:
            return "SVM"
        return "PVM" if module == "kvm_pvm" else "None"
    if architecture == "s390":
        return "SIE" if "sie" in info.get("features", "").split() else "None"
    if architecture == "arm64":
        return "ARM"
    if architecture == "power":
        return "POWER"
    if architecture == "riscv":
        return "RISCV" if _riscv_hypervisor(info["isa"]) else "None"
    if architecture == "loongarch":
        return "LoongArch" if "lvz" in info.get("Features", "").split() else "None"
    return "Unknown"


def _riscv_hypervisor(isa: str) -> bool:
    """Whether a RISC-V ISA string (rv64imafdch_zicsr_...) has the H extension: a letter of the
    single-letter run after rv32/rv64, or an `_h` of its own."""
    base, *extensions = isa.lower().split("_")
    return "h" in base[4:] or "h" in extensions


def _not_applicable(virtualization: Virtualization, module: str | None) -> PleReport:
    """PLE where KVM does not run on VT-x or AMD-V: what stands in for it, or why nothing
    does."""
    source = f"/sys/module/{module}" if virtualization == "PVM" else CPUINFO
    evidence = Evidence(source=source, observed=NO_PLE_EQUIVALENT.get(
        virtualization, f"not an x86 CPU ({virtualization})"))
    return PleReport(supported="No", enabled="No", applicable=False, module=module,
                     equivalent=PLE_EQUIVALENT.get(virtualization), evidence=[evidence])


def probe(fs: HostFS) -> CpuReport:
    text = fs.read_text(CPUINFO) or ""
    info = _first_processor(text)
    flags = set(info.get("flags", "").split())
    architecture = _architecture(info)
    module = _kvm_module(fs, architecture)
    virtualization = _virtualization(architecture, info, module)
    if virtualization == "VMX":
        ple = _intel_ple(fs, info)
    elif virtualization == "SVM":
        ple = _amd_ple(fs, flags, info, "hypervisor" in flags)
    elif virtualization in (*PLE_EQUIVALENT, *NO_PLE_EQUIVALENT):
        ple = _not_applicable(virtualization, module)
    elif virtualization == "None":
        ple = PleReport(supported="No", enabled="No", evidence=[
            Evidence(source=CPUINFO, observed="no hardware virtualization listed")
        ])
    else:
        ple = PleReport()
    return CpuReport(
        vendor=_vendor(info),
        # x86's model name, POWER's cpu, arm64's part number (lscpu's name table is not kept).
        model_name=info.get("model name") or info.get("cpu") or info.get("Model Name") or (
            f"CPU part {info['CPU part']}" if "CPU part" in info else None),
        family=_int(info.get("cpu family")),
        model=_int(info.get("model")),
        stepping=_int(info.get("stepping")),
        logical_cpus=sum(1 for line in text.splitlines() if line.startswith("processor")),
        architecture=architecture,
        virtualization=virtualization,
        kvm_module=module,
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
    if ple.supported == "Unknown" and ple.module == "kvm_amd":
        return [Problem(
            severity="Info", feature="PLE", path=CPUINFO,
            message="cannot tell whether the CPU has AMD's pause filter: this kernel prints "
            "no SVM feature flags (pausefilter among them) and the CPU family does not settle "
            f"it ({ple.evidence[0].observed}); check the CPU's documentation (family 10h has "
            "it from revision D) before overcommitting vCPUs here",
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


#: How to get /dev/kvm on each architecture.
_KVM_ADVICE = {
    "x86": "load the KVM module (modprobe kvm_intel or kvm_amd)",
    "arm64": "boot the kernel at EL2 (firmware that hands over at EL2; inside a VM, nested "
    "virtualization on the outer hypervisor) with KVM built in",
    "s390": "load the KVM module (modprobe kvm)",
    "power": "load the KVM module (modprobe kvm_hv on a PowerNV host, kvm_pr elsewhere)",
    "riscv": "load the KVM module (modprobe kvm)",
    "loongarch": "load the KVM module (modprobe kvm)",
}
#: Why KVM cannot run guests where the CPU lacks what it needs, on architectures that name it.
_MISSING = {
    "s390": "the CPU's features do not list sie (Start Interpretive Execution): KVM cannot "
    "run guests in this LPAR or z/VM guest; give it the SIE facility",
    "riscv": "the ISA (the isa line) has no H (hypervisor) extension: KVM cannot run guests on "
    "this CPU; use harts with the H extension, or enable it in the outer hypervisor",
    "loongarch": "the CPU's Features do not list lvz (LoongArch Virtualization): KVM cannot "
    "run guests on this CPU; use a CPU with LVZ (3A5000 and later), or enable it in the outer "
    "hypervisor",
}


def _no_virtualization(cpu: CpuReport) -> Problem:
    if cpu.kvm_device:
        # /dev/kvm exists only once a backend initialised: one kvtune does not know runs here.
        return Problem(
            severity="Warning", feature="CPU", path="/dev/kvm",
            message="/dev/kvm exists although the CPU offers no hardware virtualization kvtune "
            f"knows ({'no' if cpu.kvm_module is None else cpu.kvm_module} KVM module it "
            "recognises is loaded): KVM runs guests through a backend kvtune cannot judge; check "
            "with a test VM, and do not overcommit vCPUs here",
        )
    if cpu.architecture in _MISSING:
        what = _MISSING[cpu.architecture]
    elif cpu.hypervisor_guest:
        what = ("this host is itself a virtual machine without VMX or SVM (the 'hypervisor' "
                "flag is set) and no KVM module that runs guests without them (kvm_pvm) is "
                "loaded: KVM cannot run VMs here; enable nested virtualization on the outer "
                "hypervisor or use a bare-metal node")
    else:
        what = ("the CPU flags list neither vmx nor svm: hardware virtualization is missing "
                "or disabled in firmware; enable VT-x / AMD-V (SVM) in the BIOS setup")
    return Problem(severity="Error", feature="CPU", path=CPUINFO, message=what)


def _kvm_problems(cpu: CpuReport) -> list[Problem]:
    """/dev/kvm is checked whatever cpuinfo looked like: it is what runs the guests."""
    if cpu.kvm_device:
        if cpu.virtualization != "PVM":
            return []
        return [Problem(
            severity="Info", feature="CPU", path="/sys/module/kvm_pvm",
            message="KVM runs guests with kvm_pvm, without VT-x or AMD-V (this host is "
            f"{'itself a VM' if cpu.hypervisor_guest else 'without them'}): VMs start, but "
            "each guest page-table change and privileged instruction costs the host more "
            "than with hardware virtualization, and there is no Pause-Loop Exiting, so do not "
            "overcommit vCPUs here",
        )]
    advice = _KVM_ADVICE.get(cpu.architecture or "", "load the KVM module for this CPU")
    return [Problem(
        severity="Error", feature="CPU", path="/dev/kvm",
        message="/dev/kvm is missing although the CPU offers virtualization: KVM cannot run VMs "
        f"here; {advice}, and check the agent sees the host's /dev",
    )]


def check(cpu: CpuReport) -> list[Problem]:
    """Findings: no usable virtualization, no /dev/kvm, PLE missing or off (x86 only)."""
    if cpu.virtualization == "None":
        return [_no_virtualization(cpu)]
    if cpu.virtualization == "Unknown":
        # /dev/kvm is looked at all the same, and said in the same breath.
        kvm = (f"/dev/kvm is present{f' ({cpu.kvm_module} loaded)' if cpu.kvm_module else ''}"
               if cpu.kvm_device else "/dev/kvm is missing too, so KVM cannot run VMs as seen")
        return [Problem(
            severity="Warning", feature="CPU", path=CPUINFO,
            message=f"{CPUINFO} is missing or not one kvtune recognises, so what virtualization "
            f"the CPU offers is unknown; {kvm}; check that --root points at the host's / with "
            "/proc and /dev mounted",
        )]
    problems = _kvm_problems(cpu)
    if cpu.ple.applicable and cpu.virtualization in ("VMX", "SVM"):
        problems += _ple_problems(cpu.ple)
    return problems
