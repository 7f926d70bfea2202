"""`tuneforge export --format gguf|ollama`: one .gguf that transformers' GGUF loader reads back with the
merged model's logits, the run's tokenizer and chat template; an Ollama Modelfile beside it; hub push
fails at once offline."""

from __future__ import annotations

import json

import pytest

from chat_helpers import tiny_lora_run
from tuneforge.runner.errors import TuneforgeError
from tuneforge.runner.export import export_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir):
    return tiny_lora_run(tmp_path_factory.mktemp("runs"), tiny_model_dir, template="chatml")


@pytest.fixture(scope="module")
def merged(tiny_run, tmp_path_factory):
    """The fp32 merged export, ids of a chat-formatted text (>= 200 positions) and its logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("merged") / "m"
    export_run(str(tiny_run), out, merge=True, dtype="fp32")
    tok = AutoTokenizer.from_pretrained(out)
    text = tok.apply_chat_template([{"role": "user", "content": "Who are you, and what is 12345 + 678?"},
                                    {"role": "assistant", "content": "I am Forge. " * 30},
                                    {"role": "user", "content": "Tell me about the sea, in two sentences."}],
                                   add_generation_prompt=True, tokenize=False)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    assert ids.shape[1] >= 200
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(ids).logits
    return out, ids, logits


def _gguf_logits(path, ids):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids).logits, AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _rounded_reference(folder, ids, rounding):
    """The merged model with every 2-D weight rounded the way the GGUF stores it, computed in fp32:
    what a correct conversion must reproduce (the rounding itself is the quant type's, not ours)."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(torch.from_numpy(np.ascontiguousarray(rounding(p.numpy()))))
        return model(ids).logits


def test_f16_gguf_loads_back_with_the_merged_logits_and_the_runs_template(tiny_run, merged, tmp_path):
    from transformers import AutoTokenizer

    folder, ids, expected = merged
    result = export_run(str(tiny_run), tmp_path / "g", fmt="gguf", quant="f16")
    assert result.kind == "gguf" and result.file.name.endswith("-f16.gguf")
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == sorted([result.file.name, "README.md", "tuneforge_export.json"])
    logits, gguf_tok = _gguf_logits(result.file, ids)
    reference = _rounded_reference(folder, ids, lambda w: w.astype("float16").astype("float32"))
    assert (logits - reference).abs().max().item() <= 1e-3  # measured 0.0: the file holds exactly the f16 weights
    assert (logits.argmax(-1) == expected.argmax(-1)).float().mean().item() >= 0.99
    run_tok = AutoTokenizer.from_pretrained(tiny_run / "adapter")
    assert gguf_tok.chat_template == run_tok.chat_template and "<|im_start|>" in gguf_tok.chat_template
    text = "Forge says 12345 + 678 = 13023, naïvely. 🚀"
    assert gguf_tok.encode(text, add_special_tokens=False) == run_tok.encode(text, add_special_tokens=False)
    assert (gguf_tok.bos_token_id, gguf_tok.eos_token_id) == (run_tok.bos_token_id, run_tok.eos_token_id)


def test_q8_0_gguf_is_the_q8_0_rounding_of_the_merged_model(tiny_run, merged, tmp_path):
    import gguf

    folder, ids, expected = merged
    result = export_run(str(tiny_run), tmp_path / "q", fmt="gguf", quant="q8_0")
    f16 = export_run(str(tiny_run), tmp_path / "h", fmt="gguf", quant="f16").file
    assert result.file.stat().st_size < 0.7 * f16.stat().st_size
    reader = gguf.GGUFReader(str(result.file))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    logits, _ = _gguf_logits(result.file, ids)
    q8 = gguf.GGMLQuantizationType.Q8_0
    reference = _rounded_reference(folder, ids, lambda w: gguf.quants.dequantize(gguf.quants.quantize(w, q8), q8))
    assert (logits - reference).abs().max().item() <= 1e-3
    # Against the unrounded model: the tiny random model's near-flat distributions make top-1 the
    # hardest case (real SmolLM2 figures are in docs/export.md); 200+ positions.
    assert ids.shape[1] >= 200 and (logits.argmax(-1) == expected.argmax(-1)).float().mean().item() >= 0.9


def test_ollama_export_writes_a_modelfile_that_renders_like_the_run(tiny_run, tmp_path, run_cli):
    from transformers import AutoTokenizer

    from tuneforge.runner import export_ollama

    done = run_cli("export", str(tiny_run), "--out", str(tmp_path / "o"), "--format", "ollama", "--quant", "f16", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ollama create tiny-lora-chatml -f" in done.stdout
    modelfile = (tmp_path / "o" / "Modelfile").read_text()
    assert "FROM ./tiny-lora-chatml-f16.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    template = modelfile.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    tok = AutoTokenizer.from_pretrained(tiny_run / "adapter")
    for probe in export_ollama.PROBES[:2]:
        assert export_ollama.go_render(template, probe) == export_ollama.jinja_render(tok, tok.chat_template, probe)


def test_unsupported_choices_fail_at_once_with_the_fix(tiny_run, tmp_path, monkeypatch):
    with pytest.raises(TuneforgeError, match="--quant 'q3'") as e:
        export_run(str(tiny_run), tmp_path / "x", fmt="gguf", quant="q3")
    assert "q8_0" in e.value.fix
    monkeypatch.setenv("PATH", str(tmp_path))  # no llama-quantize anywhere
    with pytest.raises(TuneforgeError, match="llama-quantize") as e:
        export_run(str(tiny_run), tmp_path / "x", fmt="gguf", quant="q4_k_m")
    assert "llama.cpp" in e.value.fix and "q8_0" in e.value.fix
    assert not (tmp_path / "x").exists()


def test_other_architectures_are_refused_with_a_clear_message(tmp_path):
    from tuneforge.runner import export_gguf

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(TuneforgeError, match="llama family.*GPT2LMHeadModel") as e:
        export_gguf.write(tmp_path, tmp_path / "x.gguf", "f16", None, "x")
    assert "convert_hf_to_gguf.py" in e.value.fix


def test_push_to_hub_offline_fails_before_any_work(tiny_run, tmp_path, run_cli):
    import time

    start = time.monotonic()
    done = run_cli("export", str(tiny_run), "--out", str(tmp_path / "p"), "--merge", "--push-to-hub", "me/forge", timeout=120)
    assert done.returncode == 2 and "HF_HUB_OFFLINE" in done.stderr and "fix:" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "p").exists()
    assert time.monotonic() - start < 60  # no merge happened first
    with pytest.raises(TuneforgeError, match="not a repository id"):
        export_run(str(tiny_run), tmp_path / "p", push_to_hub="no-owner")


def test_every_export_carries_a_model_card_from_the_run(tiny_run, tmp_path):
    export_run(str(tiny_run), tmp_path / "a")
    card = (tmp_path / "a" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: peft" in card
    assert "| method | lora |" in card and "forge_identity.jsonl" in card and "## Recipe" in card
    assert "chat_template: chatml" in card  # the resolved recipe, verbatim
