"""Machine identity: one fingerprint of what changes a benchmark's numbers, for cell keys, names and reports.

Why: this project's machines are all "2-core AMD EPYC", yet some are Zen 4 (AVX-512, VNNI, native bf16) and
some Zen 3 (AVX2 only). int8 kernels (VNNI or not), bf16 training (native or not) and every speedup differ
between them, while ``/proc/cpuinfo``'s "model name" reads the same on both. A result is only comparable with
results of the same fingerprint, so the fingerprint goes into every cell key, every row, the report's name and
its Environment section, and a results file never mixes two of them.

What is in it: CPU vendor, family and model (and a microarchitecture name where known), the ISA features that
kernels dispatch on (AVX2, AVX-512F/BW, AVX-512 VNNI, AVX-VNNI, AVX-512 BF16, AMX), what torch actually
dispatches to (``torch.backends.cpu.get_cpu_capability()``, which ``ATEN_CPU_CAPABILITY`` can cap), a oneDNN
ISA cap (``ONEDNN_MAX_CPU_ISA``) and the thread count; on CUDA the device name and compute capability.
The same fingerprint can be rebuilt from pytest-benchmark's ``machine_info["cpu"]`` (py-cpuinfo), so results
written before fingerprints existed are still identified by what their run recorded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# ISA features that change which kernels run (int8 dot products, bf16, AMX tiles). Names as /proc/cpuinfo
# spells them; py-cpuinfo also writes some without the underscore (avx512vnni), normalised below.
DISPATCH_FEATURES: tuple[str, ...] = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
_FLAG_ALIASES = {"avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16"}

# (vendor, family) -> [(first model, last model, name)]: the parts this project has met, and their neighbours.
_MICROARCH: dict[tuple[str, int], list[tuple[int, int, str]]] = {
    ("amd", 23): [(0x00, 0x2F, "zen"), (0x30, 0xFF, "zen2")],
    ("amd", 25): [
        (0x00, 0x0F, "zen3"),
        (0x10, 0x1F, "zen4"),
        (0x20, 0x5F, "zen3"),
        (0x60, 0x7F, "zen4"),
        (0xA0, 0xAF, "zen4"),
    ],
    ("amd", 26): [(0x00, 0xFF, "zen5")],
}
_VENDORS = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}


@dataclass(frozen=True)
class MachineFingerprint:
    """What made a number. ``id`` hashes every field; ``slug`` is the readable part of report names."""

    device: str  # cpu | cuda
    vendor: str  # amd | intel | the raw vendor string
    cpu_model_name: str  # /proc/cpuinfo "model name" (the same on different CPUs of one cloud SKU)
    family: int | None
    model: int | None
    microarch: str  # zen3, zen4, ... or f<family>m<model> where unknown
    isa: tuple[str, ...]  # the DISPATCH_FEATURES this CPU has
    torch_cpu_capability: str  # what ATen dispatches to: AVX512 | AVX2 | DEFAULT (ATEN_CPU_CAPABILITY caps it)
    onednn_max_isa: str | None  # ONEDNN_MAX_CPU_ISA when set
    threads: int
    gpu_name: str | None = None
    gpu_capability: str | None = None  # "9.0"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["isa"] = list(self.isa)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MachineFingerprint:
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        fields["isa"] = tuple(fields.get("isa") or ())
        return cls(**fields)

    @property
    def id(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def isa_level(self) -> str:
        """The widest vector ISA present, as a name part: amx | avx512 | avx2 | base."""
        if "amx_tile" in self.isa:
            return "amx"
        if "avx512f" in self.isa:
            return "avx512"
        if "avx2" in self.isa:
            return "avx2"
        return "base"

    @property
    def capped(self) -> str | None:
        """The ISA the kernels were held to when below what the CPU has (``ATEN_CPU_CAPABILITY`` /
        ``ONEDNN_MAX_CPU_ISA``), e.g. ``avx2``; None when nothing was capped."""
        cap = self.torch_cpu_capability.lower()
        if cap and cap != "default" and self.isa_level in ("amx", "avx512") and not cap.startswith("avx512"):
            return cap
        if self.onednn_max_isa:
            return self.onednn_max_isa.lower()
        return None

    @property
    def slug(self) -> str:
        """``cpu-amd-epyc-zen4-avx512-2t``; ``cuda-nvidia-h200-sm90``: readable, and different for the CPUs and
        GPUs this project meets (the ``id`` tells any two fingerprints apart)."""
        if self.device == "cuda":
            sm = f"sm{self.gpu_capability.replace('.', '')}" if self.gpu_capability else ""
            return _slug(f"cuda-{self.gpu_name or 'gpu'}-{sm}")
        name = _slug(self.cpu_model_name) or self.vendor
        if not name.startswith(self.vendor):
            name = f"{self.vendor}-{name}"
        cap = f"-cap-{_slug(self.capped)}" if self.capped else ""
        return f"cpu-{name}-{self.microarch}-{self.isa_level}{cap}-{self.threads}t"

    def describe(self) -> str:
        """One line for report headers: ``AMD EPYC (family 25 model 17, zen4; AVX2, AVX-512F, ...); torch
        dispatch AVX512; 2 threads``."""
        if self.device == "cuda":
            return f"{self.gpu_name} (compute capability {self.gpu_capability}); host {self._cpu_text()}"
        return self._cpu_text()

    def _cpu_text(self) -> str:
        where = f"family {self.family} model {self.model}, {self.microarch}" if self.family is not None else ""
        isa = ", ".join(_ISA_TEXT.get(f, f) for f in self.isa) or "no AVX2"
        cap = f"; ONEDNN_MAX_CPU_ISA={self.onednn_max_isa}" if self.onednn_max_isa else ""
        return (
            f"{self.cpu_model_name} ({where}; {isa}); torch dispatch {self.torch_cpu_capability}{cap}; "
            f"{self.threads} threads"
        )


_ISA_TEXT = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512F",
    "avx512bw": "AVX-512BW",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "avx512_fp16": "AVX-512 FP16",
    "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def microarch(vendor: str, family: int | None, model: int | None) -> str:
    if family is None or model is None:
        return "unknown"
    for first, last, name in _MICROARCH.get((vendor, family), []):
        if first <= model <= last:
            return name
    return f"f{family}m{model}"


def dispatch_features(flags: Iterable[str]) -> tuple[str, ...]:
    have = {_FLAG_ALIASES.get(f.lower(), f.lower()) for f in flags}
    return tuple(f for f in DISPATCH_FEATURES if f in have)


def _proc_cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip(), value.strip())
    return info


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def torch_cpu_capability() -> str:
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # pragma: no cover - torch < 2.1
        return "unknown"


_FROM_ENV = object()


def cpu_fingerprint(
    threads: int,
    cpuinfo: Mapping[str, str] | None = None,
    torch_capability: str | None = None,
    onednn_max_isa: Any = _FROM_ENV,
) -> MachineFingerprint:
    """This machine's CPU fingerprint. For tests, ``cpuinfo`` (a /proc/cpuinfo block), ``torch_capability``
    and ``onednn_max_isa`` stand in for what this process reads (torch's dispatch, ``$ONEDNN_MAX_CPU_ISA``)."""
    info = _proc_cpuinfo() if cpuinfo is None else dict(cpuinfo)
    raw_vendor = info.get("vendor_id", "") or platform.processor() or platform.machine()
    vendor = _VENDORS.get(raw_vendor, _slug(raw_vendor) or "unknown")
    family, model = _int(info.get("cpu family")), _int(info.get("model"))
    onednn = (os.environ.get("ONEDNN_MAX_CPU_ISA") or None) if onednn_max_isa is _FROM_ENV else onednn_max_isa
    return MachineFingerprint(
        device="cpu",
        vendor=vendor,
        cpu_model_name=info.get("model name", "") or platform.processor() or platform.machine(),
        family=family,
        model=model,
        microarch=microarch(vendor, family, model),
        isa=dispatch_features(info.get("flags", "").split()),
        torch_cpu_capability=torch_capability or torch_cpu_capability(),
        onednn_max_isa=onednn,
        threads=threads,
    )


def fingerprint(device: str, threads: int) -> MachineFingerprint:
    """The fingerprint of the machine measuring on ``device`` (cpu | cuda) with ``threads`` CPU threads."""
    cpu = cpu_fingerprint(threads)
    if device != "cuda":
        return cpu
    import torch

    major, minor = torch.cuda.get_device_capability()
    return dataclasses.replace(
        cpu, device="cuda", gpu_name=torch.cuda.get_device_name(), gpu_capability=f"{major}.{minor}"
    )


def from_machine_info(machine_info: Mapping[str, Any]) -> MachineFingerprint | None:
    """The fingerprint of a stored results file: the one our harness recorded, else rebuilt from what
    pytest-benchmark recorded (py-cpuinfo's vendor, family, model and flags) for files written before
    fingerprints existed. None when neither is there."""
    side = machine_info.get("sidenet") if isinstance(machine_info, Mapping) else None
    if isinstance(side, Mapping) and isinstance(side.get("machine"), Mapping):
        try:
            return MachineFingerprint.from_dict(side["machine"])
        except TypeError:
            return None
    cpu = machine_info.get("cpu") if isinstance(machine_info, Mapping) else None
    if not isinstance(cpu, Mapping) or not isinstance(side, Mapping):
        return None
    raw_vendor = str(cpu.get("vendor_id_raw", ""))
    vendor = _VENDORS.get(raw_vendor, _slug(raw_vendor) or "unknown")
    family, model = _int(cpu.get("family")), _int(cpu.get("model"))
    isa = dispatch_features(cpu.get("flags") or ())
    return MachineFingerprint(
        device=str(side.get("device", "cpu")),
        vendor=vendor,
        cpu_model_name=str(cpu.get("brand_raw", "")),
        family=family,
        model=model,
        microarch=microarch(vendor, family, model),
        isa=isa,
        # not recorded then; torch picks the widest the CPU has unless capped, and nothing was capped
        torch_cpu_capability="AVX512" if "avx512f" in isa else ("AVX2" if "avx2" in isa else "DEFAULT"),
        onednn_max_isa=None,
        threads=_int(side.get("threads")) or 0,
        gpu_name=side.get("device_name") if side.get("device") == "cuda" else None,
    )


__all__ = [
    "DISPATCH_FEATURES",
    "MachineFingerprint",
    "cpu_fingerprint",
    "dispatch_features",
    "fingerprint",
    "from_machine_info",
    "microarch",
    "torch_cpu_capability",
]
