"""Shared fixtures: the real SmolLM2 (converted once), a tiny random Llama with SmolLM2's real
tokenizer, and paths to the real datasets in ../shared/data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TUNEFORGE_SHARED_DATA") or ROOT.parent / "shared" / "data")  # env: worktrees elsewhere

# One model cache for every test run (the embedded model is converted once, ~25 s).
os.environ.setdefault("TUNEFORGE_CACHE", str(ROOT / ".cache" / "tuneforge"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests run a parent pytest and child `tuneforge` processes side by side: idle OpenMP threads that
# spin-wait steal the child's cores (measured: 3x slower generation), so let them sleep.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def shared(name: str) -> Path:
    """A real data set from ../shared/data; its absence fails the test loudly (a skip would hide
    that CI tested nothing with real data)."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.fail(f"missing test data {path}: the shared data sets live in ../shared/data beside the "
                    "checkout (set TUNEFORGE_SHARED_DATA to their folder)", pytrace=False)
    return path


def require_tools(*names: str) -> None:
    """Programs the terminal tests drive (tmux, ssh, sshd): `scripts/setup.sh --test` installs them,
    so their absence is a broken test set-up and fails loudly instead of skipping."""
    import shutil

    missing = [n for n in names if not (shutil.which(n) or (n == "sshd" and Path("/usr/sbin/sshd").exists()))]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: bash scripts/setup.sh --test installs them as root "
                    "(apt-get install tmux openssh-server openssh-client)", pytrace=False)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as a Hugging Face folder (converted from its GGUF)."""
    from tuneforge.runner import model

    return Path(model.resolve("smollm2-135m").path)


@pytest.fixture(scope="session")
def tiny_model_dir(smollm2_dir, tmp_path_factory) -> Path:
    """A tiny random Llama (2 layers, hidden 64) with SmolLM2's real tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=0.2,  # large enough that a few LoRA steps visibly lower the loss
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory) -> Path:
    """recipes/quickstart.yaml trained for real on SmolLM2 with `tuneforge train` (it learns 'I am
    Forge'): the one real-weights training of the suite, shared by the tests that chat with it.

    ~70 s on an idle 2-core CPU. OMP_WAIT_POLICY=PASSIVE because this machine is shared: spinning
    OpenMP threads made the same training ~3x slower under load (measured 20 vs 65 tokens/s).
    """
    import subprocess

    runs = tmp_path_factory.mktemp("quickstart-runs")
    done = subprocess.run(
        [sys.executable, "-m", "tuneforge.runner.cli", "train", str(ROOT / "recipes" / "quickstart.yaml"),
         f"output.runs_dir={runs}", "--progress", "plain"],
        capture_output=True, text=True, timeout=1200, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return runs / "quickstart"


@pytest.fixture
def run_cli(tmp_path):
    """Run `tuneforge ARGS` as a real subprocess in tmp_path; returns CompletedProcess."""
    import subprocess

    def _run(*args: str, cwd: Path | None = None, timeout: float = 900, input: str | None = None, env: dict | None = None):
        return subprocess.run(
            [sys.executable, "-m", "tuneforge.runner.cli", *args], cwd=cwd or tmp_path, capture_output=True,
            text=True, timeout=timeout, input=input, env={**os.environ, **(env or {})},
        )

    return _run
