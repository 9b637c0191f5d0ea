"""Which precision an FFN runs in, chosen per machine: ``auto``, the default everywhere.

Why: bf16 autocast is 2-3x faster than fp32 on a CPU with native bf16 units (AVX512_BF16 or
AMX-BF16), but on a CPU without them oneDNN emulates bf16 and Google's FIB-25 model ran 32 times
*slower* (0.016 against 0.52 FOVs/s on an AVX2 AMD EPYC). A user cannot know which CPU they have,
so ``auto`` asks the CPU (or the GPU) and says what it chose and why; the reason goes into the FFN
counters, the CLI's report and the widgets.

``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is not the test: it answers True for any
AVX-512 CPU, where bf16 is still emulated. The CPU's own flags are (from
``torch.cpu.get_capabilities()``, or ``/proc/cpuinfo`` where torch has no such call), unless
oneDNN is told to stay below its bf16 kernels (``ONEDNN_MAX_CPU_ISA=AVX2``, as on a cluster that
pins one ISA for all its nodes): then bf16 is emulated whatever the CPU has.
"""

from __future__ import annotations

import os
import platform
import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from napari_connectome.errors import UserInputError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# x86 flags (as /proc/cpuinfo and torch.cpu.get_capabilities() spell them) that mean bf16 runs in
# hardware; the names shown to users beside them.
NATIVE_BF16 = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512_BF16"}
# oneDNN's ISA caps (ONEDNN_MAX_CPU_ISA) below its native bf16 kernels (avx512_core_bf16).
NO_BF16_ISA_CAPS = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
)
# Flags worth printing beside a speed figure (the benchmark, the counters' "cpu_flags").
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "avx512_fp16")
# The measured case behind the warning (docs/segmenting.md, "Which precision").
EMULATED_BF16_FIGURE = "Google's FIB-25 model: 0.016 FOVs/s in bf16, 0.52 in fp32 on an AVX2 CPU"


class PrecisionWarning(UserWarning):
    """An explicit precision that will run slowly on this machine (the CLI prints it)."""


def _normalise(flag: str) -> str:
    # torch says "avx512_f", "avx512_bw"; /proc/cpuinfo says "avx512f", "avx512bw"
    flag = flag.strip().lower()
    if flag.startswith("avx512_") and flag[7:] in ("f", "bw", "cd", "dq", "vl"):
        flag = "avx512" + flag[7:]
    return flag


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (lower case, /proc/cpuinfo spelling); empty if unknown."""
    try:
        import torch

        caps = torch.cpu.get_capabilities()
        found = {_normalise(k) for k, v in caps.items() if v is True}
        if found:
            return frozenset(found)
    except (ImportError, AttributeError, RuntimeError):
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):  # x86, ARM
                    return frozenset(_normalise(v) for v in value.split())
    except OSError:
        pass
    return frozenset()


def cpu_name() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (for reports beside speed figures)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def native_bf16(flags: Iterable[str]) -> list[str]:
    """The flags among ``flags`` that make bf16 native on an x86 CPU (user-facing names)."""
    have = {_normalise(f) for f in flags}
    return [name for flag, name in NATIVE_BF16.items() if flag in have]


def onednn_isa_cap(environ: Mapping[str, str] | None = None) -> str | None:
    """oneDNN's ISA cap if one is set below its bf16 kernels (``ONEDNN_MAX_CPU_ISA`` or the older
    ``DNNL_MAX_CPU_ISA``), else None."""
    environ = os.environ if environ is None else environ
    cap = (environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    return cap if cap in NO_BF16_ISA_CAPS else None


def _cuda_bf16(device: torch.device) -> tuple[bool, str]:
    import torch

    name = torch.cuda.get_device_name(device)
    try:  # emulated bf16 (pre-Ampere) counts as none: it is slower than fp32
        ok = bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # older torch: no including_emulation
        ok = bool(torch.cuda.is_bf16_supported())
    return ok, name


def choose_precision(
    requested: str | None,
    device: str | torch.device = "cpu",
    *,
    flags: Iterable[str] | None = None,
    cuda_bf16: bool | None = None,
    environ: Mapping[str, str] | None = None,
    warn: bool = True,
) -> tuple[str, str]:
    """``(precision, reason)`` for running on ``device`` when ``requested`` was asked for.

    ``requested``: ``auto`` (or None), ``fp32``, ``bf16`` or ``fp16``. ``auto`` gives bf16 on a CPU
    with native bf16 (:data:`NATIVE_BF16`) and on a GPU with native bf16, fp32 otherwise. An
    explicit ``bf16`` where bf16 is emulated is kept but warns (:class:`PrecisionWarning`) with
    the reason. ``flags`` (CPU flags), ``cuda_bf16`` and ``environ`` stand in for this machine's
    answers, so the decision can be checked for any machine.
    """
    req = "auto" if requested in (None, "") else str(requested).lower()
    if req not in PRECISIONS:
        raise UserInputError(f"unknown precision {requested!r}; choose auto, fp32, bf16 or fp16")
    kind = device.type if not isinstance(device, str) else str(device).partition(":")[0]
    kind = kind or "cpu"
    if kind == "cpu":
        if req == "fp16":
            raise UserInputError("fp16 is for GPUs; on the CPU use --precision auto, bf16 or fp32")
        native = native_bf16(cpu_flags() if flags is None else flags)
        has = ", ".join(native)
        cap = onednn_isa_cap(environ)
        lacks = "this CPU has no native bf16 (no AVX512_BF16 or AMX-BF16)"
        if native and cap:
            lacks = f"oneDNN is held at {cap} (ONEDNN_MAX_CPU_ISA), so no native bf16"
            native = []
        if req == "auto":
            if native:
                return "bf16", f"auto: bf16, this CPU has native bf16 ({has})"
            return "fp32", f"auto: fp32, {lacks}; bf16 would be emulated, many times slower"
        if req == "bf16" and not native:
            reason = (
                f"bf16 as asked, but {lacks}: it is emulated and can be 30x slower than fp32 "
                f"({EMULATED_BF16_FIGURE}); use --precision auto or fp32"
            )
            if warn:
                warnings.warn(reason, PrecisionWarning, stacklevel=2)
            return "bf16", reason
        extra = f" (native: {has})" if req == "bf16" else ""
        return req, f"{req} as asked{extra}"
    if kind == "cuda":
        if cuda_bf16 is None:
            import torch

            dev = device if not isinstance(device, str) else torch.device(device)
            cuda_bf16, gpu = _cuda_bf16(dev)
        else:
            gpu = "the GPU"
        if req == "auto":
            if cuda_bf16:
                return "bf16", f"auto: bf16, {gpu} has native bf16"
            return "fp32", f"auto: fp32, {gpu} has no native bf16 (fp16 can be asked for)"
        if req == "bf16" and not cuda_bf16:
            reason = (
                f"bf16 as asked, but {gpu} has no native bf16 (it is emulated, slower than "
                "fp32); use --precision auto, fp16 or fp32"
            )
            if warn:
                warnings.warn(reason, PrecisionWarning, stacklevel=2)
            return "bf16", reason
        return req, f"{req} as asked"
    # other devices (mps, xpu...): nothing measured, so auto stays exact
    if req == "auto":
        return "fp32", f"auto: fp32 on {kind} (no bf16 figure measured there)"
    return req, f"{req} as asked"
