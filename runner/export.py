"""Export a run for use outside tuneforge: the adapter alone, merged full weights, or one GGUF file.

A merged export is a plain Hugging Face model folder (sharded safetensors, config, generation
config, tokenizer and the run's chat template) that `AutoModelForCausalLM.from_pretrained(DIR)`
loads with no peft and no tuneforge, and that gives the same logits as base + adapter.
`fmt="gguf"` converts the merged model to one .gguf (runner.export_gguf); `fmt="ollama"` adds a
Modelfile whose template is the run's, translated and checked (runner.export_ollama).
Everything is written into a temporary sibling folder and renamed into place, so an interrupted
export never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from . import model as model_mod
from .errors import TuneforgeError
from .rundir import RunDir, find_run, now_iso

DTYPES = ("bf16", "fp16", "fp32")
FORMATS = ("hf", "gguf", "ollama")
MARKER = "tuneforge_export.json"
_EXPORT_FILES = (MARKER, "config.json", "adapter_config.json", "Modelfile")


@dataclass
class ExportResult:
    path: Path
    kind: str  # "merged model" | "full model" | "adapter" | "gguf" | "ollama"
    how_to_load: str
    file: Path | None = None  # the .gguf of a gguf/ollama export
    url: str | None = None  # where --push-to-hub put it


def export_run(run_ref: str, out: str | Path, *, merge: bool = False, dtype: str = "bf16", max_shard_size: str = "2GB",
               base: str | None = None, force: bool = False, runs_dir: str = "runs",
               say: Callable[[str], None] = lambda text: None, fmt: str = "hf", quant: str = "q8_0",
               push_to_hub: str | None = None, private: bool = False) -> ExportResult:
    """Write the run's weights to `out` (and push them); see the module docstring for each kind."""
    from . import export_hub

    if push_to_hub:
        export_hub.check_can_push(push_to_hub)  # offline or a bad id: fail before any work
    if fmt not in FORMATS:
        raise TuneforgeError(f"--format '{fmt}' is not one of {', '.join(FORMATS)}", "use --format gguf for llama.cpp/LM Studio, ollama for Ollama")
    if fmt != "hf":
        from . import export_gguf

        quant = export_gguf.check_quant(quant)
        if quant in export_gguf.LLAMA_QUANTIZE_TYPES:
            export_gguf.llama_quantize()  # before minutes of merging: say at once how to get it
        merge, dtype = True, "fp32"  # the GGUF writer rounds from full precision
    if dtype not in DTYPES:
        raise TuneforgeError(f"--dtype '{dtype}' is not one of {', '.join(DTYPES)}", "use --dtype bf16 (half the size of fp32)")
    _check_shard_size(max_shard_size)
    run = find_run(run_ref, runs_dir)
    weights = run.weights
    if weights is None:
        raise TuneforgeError(f"run '{run_ref}' has no final weights to export (state: {run.read_status().get('state', 'unknown')})",
                             "wait for the run to finish (tuneforge watch), then export it")
    recipe = yaml.safe_load(run.recipe.read_text(encoding="utf-8")) if run.recipe.is_file() else {}
    recipe = recipe or {}
    out = Path(out).expanduser().resolve()
    _check_out(out, run, force)

    is_adapter = (weights / "adapter_config.json").is_file()
    if is_adapter and not merge:
        kind = "adapter"
        writer = lambda tmp: _write_adapter(weights, tmp)  # noqa: E731
    elif is_adapter:
        # the run's base: --base, else its model (an earlier run's merged result for model.from_run)
        resolved = model_mod.resolve(base) if base else model_mod.resolve_base(recipe.get("model") or {})
        _refuse_quantised(run, recipe, resolved, explicit_base=base is not None)
        kind = "merged model"
        writer = lambda tmp: _write_merged(resolved, weights, tmp, dtype, max_shard_size, say)  # noqa: E731
    else:
        kind = "full model"
        resolved = model_mod.ResolvedModel(str(weights), str(weights), "local")
        writer = lambda tmp: _write_full(resolved, weights, tmp, dtype, max_shard_size, say)  # noqa: E731

    if fmt != "hf":
        from .export_gguf import check_config

        check_config(Path(resolved.path))  # an unsupported architecture: say so before the merge
    tmp = out.with_name(f".{out.name}.tmp-export")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        say(f"exporting {run.name} ({kind}) to {out} ...")
        writer(tmp)
        gguf_file = None
        if fmt != "hf":
            kind, gguf_file = fmt, _to_gguf(tmp, out, run, recipe, fmt, quant, say)
        info = {"run": str(run.path.resolve()), "kind": kind, "exported_at": now_iso(), "quant": quant if fmt != "hf" else None,
                "base_model": base or (recipe.get("model") or {}).get("name_or_path"),
                "dtype": None if kind in ("adapter", "gguf", "ollama") else dtype, "method": recipe.get("method")}
        card = export_hub.model_card(run, recipe, kind, quant if fmt != "hf" else None)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result = _result(out, run, recipe, kind, fmt, gguf_file, base)
    if push_to_hub:
        say(f"pushing {out} to {push_to_hub} ...")
        result.url = export_hub.push(out, push_to_hub, private)
    return result


def _result(out: Path, run: RunDir, recipe: dict, kind: str, fmt: str, gguf_file: Path | None, base: str | None) -> ExportResult:
    if fmt == "gguf":
        return ExportResult(out, kind, f"llama-cli -m {out / gguf_file.name}   (or open it in LM Studio)", out / gguf_file.name)
    if fmt == "ollama":
        return ExportResult(out, kind, f"ollama create {_ollama_name(run.name)} -f {out / 'Modelfile'}   then: "
                            f"ollama run {_ollama_name(run.name)}", out / gguf_file.name)
    if kind == "adapter":
        base_name = base or (recipe.get("model") or {}).get("name_or_path", "BASE")
        how = (f"tuneforge chat {base_name} --adapter {out}   or   "
               f"PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained('{base_name}'), '{out}')")
    else:
        how = f"AutoModelForCausalLM.from_pretrained('{out}') and AutoTokenizer.from_pretrained('{out}')"
    return ExportResult(out, kind, how)


def _check_shard_size(size: str) -> None:
    import re

    if not re.fullmatch(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)\s*", str(size).upper()):
        raise TuneforgeError(f"--max-shard-size '{size}' is not a size", "use a size like 2GB, 500MB or 5GB")


def _check_out(out: Path, run: RunDir, force: bool) -> None:
    """Never overwrite anything that is not an earlier export, and never without --force."""
    resolved, run_path = out.resolve(), run.path.resolve()
    if resolved == run_path or run_path in resolved.parents or resolved in run_path.parents:
        raise TuneforgeError(f"--out '{out}' overlaps the run directory {run.path}",
                             "export to a folder outside the run, e.g. --out exports/" + run.name)
    if out.exists() and not out.is_dir():
        raise TuneforgeError(f"--out '{out}' is a file", "choose a folder name for --out")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise TuneforgeError(f"--out '{out}' is not empty", "choose a new folder, or add --force to replace an earlier export there")
        if not any((out / name).is_file() for name in _EXPORT_FILES):
            raise TuneforgeError(f"--out '{out}' holds files that are not a model export, so --force will not delete them",
                                 "choose a new or empty folder for --out")


def _quantisation_of(recipe: dict[str, Any]) -> str | None:
    """How the run's base was quantised during training, from its recipe (None = not quantised)."""
    if recipe.get("method") == "qlora":
        return "method: qlora (4-bit base)"
    spec = recipe.get("model") or {}
    for key in ("quantization", "quantisation", "load_in_4bit", "load_in_8bit", "bits"):
        value = spec.get(key, recipe.get(key))
        if value not in (None, False, "none", "no", 0, 16, 32, "", {}):
            return f"{key}: {value}"
    return None


def _refuse_quantised(run: RunDir, recipe: dict, resolved, explicit_base: bool) -> None:
    """Merging into quantised weights loses the adapter in the rounding and cannot be saved as plain weights."""
    from transformers import AutoConfig

    adapter_only = f"or export the adapter alone: tuneforge export {run.path} --out DIR (without --merge)"
    try:
        config = AutoConfig.from_pretrained(resolved.path)
    except Exception:  # noqa: BLE001 - a missing config fails clearly when the model loads
        config = None
    stored = getattr(config, "quantization_config", None)
    if stored:
        method = stored.get("quant_method", "quantised") if isinstance(stored, dict) else getattr(stored, "quant_method", "quantised")
        raise TuneforgeError(
            f"cannot merge into '{resolved.source}': its weights are stored quantised ({method}), and LoRA "
            "weights merged into quantised weights are rounded away and cannot be saved as a plain model",
            f"merge into a 16-bit copy of the same base model: add --base PATH_OR_ID_OF_16BIT_MODEL, {adapter_only}",
        )
    quant = None if explicit_base else _quantisation_of(recipe)
    if quant:
        name = (recipe.get("model") or {}).get("name_or_path", resolved.source)
        raise TuneforgeError(
            f"run '{run.name}' trained its adapter on a quantised base ({quant}); an adapter cannot be "
            "merged into quantised weights",
            f"load the base in 16-bit to merge: tuneforge export {run.path} --out DIR --merge --base {name} "
            f"(replies can differ slightly from the quantised model you trained with), {adapter_only}",
        )


def _write_adapter(weights: Path, tmp: Path) -> None:
    for item in weights.iterdir():
        if item.is_file():
            shutil.copy2(item, tmp / item.name)


def _torch_dtype(dtype: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]


def _save(model, weights: Path, tmp: Path, dtype: str, max_shard_size: str) -> None:
    """Weights in the chosen dtype, the run's tokenizer + chat template, and a matching generation config."""
    tok = model_mod.load_tokenizer(model_mod.ResolvedModel(str(weights), str(weights), "local"))
    model = model.to(_torch_dtype(dtype))
    model.config.dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[dtype]
    gen = getattr(model, "generation_config", None)  # a reward model (stage rm) generates nothing
    if gen is not None:
        gen.pad_token_id = tok.pad_token_id
        if tok.eos_token_id is not None:
            gen.eos_token_id = tok.eos_token_id
    model.save_pretrained(str(tmp), max_shard_size=max_shard_size)
    tok.save_pretrained(str(tmp))


def _write_merged(resolved, adapter_dir: Path, tmp: Path, dtype: str, max_shard_size: str, say) -> None:
    say(f"loading base {resolved.source} and merging the adapter (in fp32, saved as {dtype}) ...")
    merged = model_mod.merge_adapter(resolved, adapter_dir)  # a causal LM, or a reward model (stage rm)
    _save(merged, adapter_dir, tmp, dtype, max_shard_size)


def _write_full(resolved, weights: Path, tmp: Path, dtype: str, max_shard_size: str, say) -> None:
    say(f"loading {weights} ...")
    _save(model_mod.load_model(resolved, "fp32"), weights, tmp, dtype, max_shard_size)


def _ollama_name(run_name: str) -> str:
    import re

    return re.sub(r"[^a-z0-9._-]", "-", run_name.lower()) or "tuneforge"


def _to_gguf(tmp: Path, out: Path, run: RunDir, recipe: dict, fmt: str, quant: str, say) -> Path:
    """Replace the merged folder in `tmp` by <run>-<quant>.gguf (+ Modelfile for ollama)."""
    from transformers import AutoTokenizer

    from . import export_gguf, export_ollama

    hf = tmp / "hf"
    hf.mkdir()
    for item in list(tmp.iterdir()):
        if item != hf:
            shutil.move(str(item), hf / item.name)
    tok = AutoTokenizer.from_pretrained(str(hf))
    template = tok.chat_template
    translation = None
    if fmt == "ollama":  # refuse an untranslatable template before the slow conversion
        translation = export_ollama.translate(tok, template, export_gguf.adds_bos(tok))
    target = tmp / f"{_ollama_name(run.name)}-{quant}.gguf"
    say(f"writing {target.name} ({quant}) ...")
    export_gguf.write(hf, target, quant, template, run.name, say)
    if translation is not None:
        context = min(int(json.loads((hf / "config.json").read_text())["max_position_embeddings"]), 8192)
        (tmp / "Modelfile").write_text(export_ollama.modelfile(target.name, translation, context), encoding="utf-8")
    shutil.rmtree(hf)
    return target
