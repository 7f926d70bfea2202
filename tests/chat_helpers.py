"""Tiny trained runs shared by the chat and export tests (trained once per test session).

A real `runner.train.train` run on the tiny random Llama: 3 steps of LoRA at a high learning
rate, so the tuned model answers differently from its base. The run forces the 'alpaca'
template, which the base tokenizer does not have, so a test can tell that chat and export use
the template saved with the run and not the base model's own.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_RUNS: dict[tuple, Path] = {}


def tiny_lora_run(runs_dir: Path, base_dir: Path, template: str = "alpaca", method: str = "lora") -> Path:
    key = (str(base_dir), template, method)
    if key in _RUNS:
        return _RUNS[key]
    from tuneforge.runner.recipe import recipe_from_dict
    from tuneforge.runner.train import train

    recipe = recipe_from_dict({
        "name": f"tiny-{method}-{template}",
        "model": {"name_or_path": str(base_dir), "chat_template": template},
        "method": method,
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "data": {"train": [{"path": str(ROOT / "recipes" / "data" / "forge_identity.jsonl"), "max_samples": 8}],
                 "max_length": 96},
        "train": {"max_steps": 3, "batch_size": 4, "learning_rate": 0.05 if method == "lora" else 0.01, "logging_steps": 1, "warmup_ratio": 0.0},
        "device": "cpu", "precision": "fp32",
        "output": {"runs_dir": str(runs_dir)},
    })
    run = train(recipe, progress_mode="plain").run
    _RUNS[key] = run.path
    return run.path


def poll(condition, timeout: float = 60.0, interval: float = 0.02):
    """Wait (without blocking an event loop) until condition() is true; fail after timeout."""
    import asyncio
    import time

    async def _wait():
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout:.0f}s")
            await asyncio.sleep(interval)

    return _wait()
