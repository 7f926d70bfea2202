"""Device and precision, chosen at run time from the hardware (never hard-coded)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu", "cuda", "cuda:1", "mps"
    precision: str  # "bf16", "fp16", "fp32"
    reason: str  # why this precision, printed at start and saved in status.json


def cpu_supports_bf16() -> bool:
    """True on CPUs with native bf16 matmul (avx512_bf16 or AMX), where bf16 autocast is ~2.5x faster."""
    import torch

    checks = [getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None)]
    if any(c is not None and c() for c in checks):
        return True
    try:
        flags = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose(device: str = "auto", precision: str = "auto") -> Placement:
    import torch

    from .errors import TuneforgeError

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TuneforgeError(
            f"device '{device}' was asked for but torch sees no CUDA GPU",
            "set device: auto (or cpu), or install a CUDA build of torch",
        )
    if device == "mps" and not torch.backends.mps.is_available():
        raise TuneforgeError("device 'mps' was asked for but is not available", "set device: auto")

    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        major, minor = torch.cuda.get_device_capability(index)
        bf16_ok = major >= 8
        auto = ("bf16", f"CUDA compute capability {major}.{minor} >= 8.0") if bf16_ok else (
            "fp16", f"CUDA compute capability {major}.{minor} < 8.0 has no fast bf16")
    elif device == "mps":
        bf16_ok, auto = False, ("fp32", "mps: fp32 is the reliable choice")
    else:
        bf16_ok = cpu_supports_bf16()
        auto = ("bf16", "CPU has avx512_bf16/AMX") if bf16_ok else ("fp32", "CPU has no native bf16")

    if precision == "auto":
        return Placement(device, auto[0], f"auto: {auto[1]}")
    if precision == "fp16" and device == "cpu":
        raise TuneforgeError("precision fp16 is not supported for training on CPU", "use precision: auto, bf16 or fp32")
    if precision == "bf16" and not bf16_ok:
        raise TuneforgeError(
            f"precision bf16 was asked for but {device} has no native bf16 support",
            "use precision: auto (it picks fp16 or fp32 here)",
        )
    return Placement(device, precision, "set in the recipe")
