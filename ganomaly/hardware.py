"""The hardware: what it is (named beside every timing), what it runs natively, and the
training precision that follows from it.

Training may run under bf16 autocast (`--precision`); scoring is always float32, so a score
never depends on the precision a model was trained with.

    >>> resolve_precision("auto", torch.device("cuda"))   # on a GPU with bf16
    'bf16'
    >>> resolve_precision("auto", torch.device("cpu"))    # on a CPU with AVX512-BF16 or AMX
    'bf16'
    >>> resolve_precision("auto", torch.device("cpu"))    # on any other CPU
    'fp32'
"""

from __future__ import annotations

import functools
import platform
import warnings
from pathlib import Path

import torch

from ganomaly.config import PRECISIONS

CPUINFO = Path("/proc/cpuinfo")
# Its flags for the x86 instructions that compute in bfloat16 (not merely convert to it).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo_field(name: str) -> str:
    """The first `name : value` line's value in /proc/cpuinfo ("" where there is none)."""
    try:
        lines = CPUINFO.read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return ""


def cpu_model() -> str:
    """The CPU's model name as the OS reports it ("AMD EPYC 7R13 Processor"), recorded beside
    every timing: a speed figure means little without the CPU it was measured on."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def device_description(device: torch.device) -> str:
    """What computes on `device`, for the record beside its timings: the GPU's name, or
    "cpu (<the CPU's model>)"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({cpu_model()})"


@functools.cache
def _cpu_has_native_bf16() -> bool:
    flags = set(_cpuinfo_field("flags").split())
    if flags:
        return any(flag in flags for flag in BF16_CPU_FLAGS)
    # No x86 flags to read (macOS, Windows, Arm): ask PyTorch's own CPU detection. Its public
    # get_cpu_capability() names only the vector width (e.g. "AVX512"), so the bf16 and AMX
    # probes of torch.cpu are used where this PyTorch has them.
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    if any(getattr(torch.cpu, name, lambda: False)() for name in probes):
        return True
    capability = torch.backends.cpu.get_cpu_capability().upper()
    return "BF16" in capability or "AMX" in capability


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 natively: a CUDA GPU that supports it, or a CPU
    with AVX512-BF16 or AMX (detected from the CPU's flags, not guessed from its vendor).

    Elsewhere bf16 autocast still gives correct results, emulated and slower than float32.
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return _cpu_has_native_bf16()
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """The training precision `precision` ("auto", "fp32" or "bf16") means on `device`:
    "fp32" or "bf16".

    "auto" is bf16 where `device` computes in bf16 natively (a CUDA GPU with bf16, a CPU with
    AVX512-BF16 or AMX) and fp32 elsewhere: the fp32-vs-bf16 AUROC table in the bf16 section
    of docs/performance.md found no difference beyond the seed spread.
    "bf16" is honoured on any device; without native support it warns that it will be slower.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and not native_bf16(device):
        warnings.warn(
            f"--precision bf16 on a {device.type} without native bfloat16 (AVX512-BF16, AMX or "
            "a bf16 GPU): results are correct but training is slower than fp32",
            stacklevel=2,
        )
    return precision
