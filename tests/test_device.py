"""Precision choice against this CPU's measured speed: bf16 autocast only where bf16 is native."""

from __future__ import annotations

import pytest

from tuneforge.runner import device
from tuneforge.runner.errors import TuneforgeError
from tuneforge.runner.estimate import matmul_flops


def test_auto_never_picks_bf16_where_the_cpu_emulates_it():
    # 256^2: emulated bf16 runs near 1 GFLOP/s (34 MFLOP per product), native bf16 beats fp32.
    bf16 = matmul_flops("bf16", size=256, seconds=0.3)
    fp32 = matmul_flops("fp32", size=256, seconds=0.3)
    chosen = device.choose("cpu", "auto")
    print(f"bf16 {bf16 / 1e9:.1f} GFLOP/s, fp32 {fp32 / 1e9:.1f} GFLOP/s: {chosen.precision} ({chosen.reason})")
    if bf16 < 0.5 * fp32:  # emulated: slower than fp32 by far
        assert chosen.precision == "fp32" and "no native bf16" in chosen.reason
    if chosen.precision == "bf16":
        assert bf16 > fp32, "bf16 autocast chosen on a CPU where bf16 is slower than fp32"


def test_asking_for_bf16_on_a_cpu_without_it_is_a_user_error():
    if device.cpu_supports_bf16():
        assert device.choose("cpu", "bf16").precision == "bf16"
        return
    with pytest.raises(TuneforgeError) as info:
        device.choose("cpu", "bf16")
    assert "no native bf16" in info.value.message and "precision: auto" in info.value.fix
