"""`tuneforge export`: merged weights that plain transformers loads with the same logits, or the adapter alone."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from chat_helpers import tiny_lora_run
from tuneforge.runner.errors import TuneforgeError
from tuneforge.runner.export import export_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model_dir):
    return tiny_lora_run(tmp_path_factory.mktemp("runs"), tiny_model_dir)


@pytest.fixture(scope="session")
def reference_logits(tiny_run, tiny_model_dir):
    """Logits of base + adapter, the way training left them (peft, unmerged)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_run / "adapter")
    ids = tok.apply_chat_template([{"role": "user", "content": "Who are you?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                                      str(tiny_run / "adapter")).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        tuned, plain = model(ids).logits, base(ids).logits
    assert not torch.allclose(tuned, plain, atol=1e-3)  # the adapter matters, so equal logits mean something
    return ids, tuned


def _logits(folder, ids, **kw):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, **kw).eval()
    with torch.no_grad():
        return model, model(ids).logits.float()


def test_merged_export_loads_in_plain_transformers_with_the_same_logits(tiny_run, reference_logits, tmp_path):
    import torch
    from transformers import AutoTokenizer, GenerationConfig

    ids, expected = reference_logits
    out = tmp_path / "merged"
    result = export_run(str(tiny_run), out, merge=True, dtype="fp32", max_shard_size="4MB")
    assert result.kind == "merged model"
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()  # sharded
    assert not (out / "adapter_config.json").exists() and not list(out.glob("*.bin"))
    model, logits = _logits(out, ids)
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    # merged W + s B A against x W + s (x A) B, both fp32 (eps 1.2e-7): other summation orders, whose
    # rounding differs between AVX2 and AVX-512 kernels; ~1e-6 relative, 1e-4 leaves a wide margin
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    tok = AutoTokenizer.from_pretrained(out)
    run_tok = AutoTokenizer.from_pretrained(tiny_run / "adapter")
    assert tok.chat_template == run_tok.chat_template and "### Response:" in tok.chat_template
    gen = GenerationConfig.from_pretrained(out)
    assert gen.eos_token_id == tok.eos_token_id and gen.pad_token_id == tok.pad_token_id
    marker = json.loads((out / "tuneforge_export.json").read_text())
    assert marker["kind"] == "merged model" and marker["dtype"] == "fp32"
    assert not list(tmp_path.glob(".*tmp-export"))  # no temporary folder left behind


def test_bf16_export_is_half_the_size_and_close(tiny_run, reference_logits, tmp_path):
    import torch

    ids, expected = reference_logits
    export_run(str(tiny_run), tmp_path / "fp32", merge=True, dtype="fp32")
    export_run(str(tiny_run), tmp_path / "bf16", merge=True, dtype="bf16")
    size = {d: sum(p.stat().st_size for p in (tmp_path / d).glob("*.safetensors")) for d in ("fp32", "bf16")}
    assert size["bf16"] < 0.55 * size["fp32"]
    model, logits = _logits(tmp_path / "bf16", ids)
    assert model.dtype == torch.bfloat16  # the saved dtype is what from_pretrained picks
    assert (logits.argmax(-1) == expected.argmax(-1)).float().mean() > 0.8


def test_adapter_export_is_the_adapter_with_its_template(tiny_run, reference_logits, tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids, expected = reference_logits
    out = tmp_path / "adapter"
    result = export_run(str(tiny_run), out)
    assert result.kind == "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "chat_template.jinja", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), str(out)).eval()
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, expected, atol=1e-5)


def test_out_folder_is_never_overwritten_by_accident(tiny_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TuneforgeError, match="not empty") as e:
        export_run(str(tiny_run), out)
    assert "--force" in e.value.fix
    with pytest.raises(TuneforgeError, match="not a model export"):
        export_run(str(tiny_run), out, force=True)  # --force replaces exports, not other files
    assert (out / "notes.txt").read_text() == "mine"
    earlier = tmp_path / "earlier"
    export_run(str(tiny_run), earlier)
    with pytest.raises(TuneforgeError, match="not empty"):
        export_run(str(tiny_run), earlier, merge=True)
    export_run(str(tiny_run), earlier, merge=True, dtype="fp32", force=True)
    assert (earlier / "config.json").is_file() and not (earlier / "adapter_config.json").exists()
    with pytest.raises(TuneforgeError, match="overlaps the run"):
        export_run(str(tiny_run), tiny_run / "export")
    with pytest.raises(TuneforgeError, match="--dtype 'int8'"):
        export_run(str(tiny_run), tmp_path / "x", merge=True, dtype="int8")


def test_merging_into_a_quantised_base_is_refused_with_the_fix(tiny_run, tiny_model_dir, tmp_path):
    qrun = tmp_path / "qlora-run"
    shutil.copytree(tiny_run, qrun, ignore=shutil.ignore_patterns("checkpoints"))
    recipe = yaml.safe_load((qrun / "recipe.yaml").read_text())
    recipe["method"] = "qlora"
    (qrun / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(TuneforgeError, match="quantised base") as e:
        export_run(str(qrun), tmp_path / "m", merge=True)
    assert "16-bit" in e.value.fix and f"--base {tiny_model_dir}" in e.value.fix
    export_run(str(qrun), tmp_path / "a")  # the adapter alone is always fine
    # Following the fix: the base loads in 16-bit and the merge goes through.
    assert export_run(str(qrun), tmp_path / "m", merge=True, base=str(tiny_model_dir)).kind == "merged model"

    # A base stored quantised on disk cannot be merged into at all, --base or not.
    qbase = tmp_path / "qbase"
    shutil.copytree(tiny_model_dir, qbase)
    cfg = json.loads((qbase / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (qbase / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TuneforgeError, match="stored quantised") as e:
        export_run(str(qrun), tmp_path / "m2", merge=True, base=str(qbase))
    assert "16-bit copy" in e.value.fix


def test_export_command(tiny_run, tmp_path, run_cli):
    ok = run_cli("export", str(tiny_run), "--out", str(tmp_path / "m"), "--merge", "--dtype", "fp32", timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "Exported merged model" in ok.stdout and "AutoModelForCausalLM.from_pretrained" in ok.stdout
    again = run_cli("export", str(tiny_run), "--out", str(tmp_path / "m"), timeout=300)
    assert again.returncode == 2 and "not empty" in again.stderr and "fix:" in again.stderr
    assert "Traceback" not in again.stderr


def test_full_fine_tune_exports_and_compares_with_its_base(tmp_path_factory, tiny_model_dir, tmp_path):
    import torch

    from tuneforge.runner import chat

    run = tiny_lora_run(tmp_path_factory.mktemp("runs"), tiny_model_dir, method="full")
    assert (run / "model" / "config.json").is_file()
    result = export_run(str(run), tmp_path / "full", dtype="fp32")
    assert result.kind == "full model"
    engine = chat.load(str(run), device="cpu", warmup=False)
    ids = torch.tensor([engine.prompt_ids([{"role": "user", "content": "Who are you?"}])])
    _, expected = _logits(run / "model", ids)
    _, exported = _logits(tmp_path / "full", ids)
    assert torch.allclose(exported, expected, atol=1e-5)
    # Compare mode for a full fine-tune loads the recipe's base model beside it.
    assert engine.can_compare
    messages, sampling = [{"role": "user", "content": "Who are you?"}], chat.Sampling(max_new_tokens=8)
    reference = chat.ChatModel(chat.model_mod.load_model(chat.model_mod.resolve(str(tiny_model_dir))).eval(),
                               engine.tokenizer, "reference")
    assert engine.base().reply(messages, sampling) == reference.reply(messages, sampling)
    assert engine.reply(messages, sampling) != reference.reply(messages, sampling)
