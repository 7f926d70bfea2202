"""What `tuneforge serve` serves: runs (or models) by name, and their tokenizers with the run's template.

Light (no torch at import); the weights load in loader.py, in each model's process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import TuneforgeError


@dataclass(frozen=True)
class Target:
    """One served model: the id clients name, what `chat.load` takes, and where its config lives."""

    id: str
    ref: str
    config_dir: str  # config.json / generation_config.json
    tokenizer_dir: str  # tokenizer + the chat template (a run's adapter/ or model/ folder)
    template_choice: str = "auto"


def targets(refs: list[str], runs_dir: str = "runs") -> list[Target]:
    """Targets for `serve RUN|MODEL ...`: run directories or names, model aliases, folders or .gguf files."""
    import yaml

    from .. import model as model_mod
    from ..chat import resolve_target
    from ..rundir import RunDir

    out: list[Target] = []
    for raw in refs:
        ref = resolve_target(raw, runs_dir)
        path = Path(ref)
        if (path / "recipe.yaml").is_file():
            run = RunDir(path)
            spec = (yaml.safe_load(run.recipe.read_text(encoding="utf-8")) or {}).get("model") or {}
            weights = run.weights
            base = str(weights) if weights.name == "model" else model_mod.resolve(
                spec.get("name_or_path", model_mod.EMBEDDED_ALIAS)).path
            out.append(Target(run.name, str(path.resolve()), base, str(weights), spec.get("chat_template", "auto")))
        else:
            resolved = model_mod.resolve(ref)
            if not Path(resolved.path).is_dir():
                raise TuneforgeError(f"'{raw}' is not a run or a local model", "serve a run directory, a run name, "
                                     "smollm2-135m, a model folder or a .gguf file")
            out.append(Target(Path(raw).name if path.exists() else raw, resolved.path, resolved.path, resolved.path))
    ids = [t.id for t in out]
    dup = next((i for i in ids if ids.count(i) > 1), None)
    if dup:
        raise TuneforgeError(f"two targets are both named '{dup}'", "serve runs with different names")
    return out


def load_tokenizer(target: Target):
    """The target's tokenizer with the chat template it trained with (tools rendered when it cannot)."""
    from .. import model as model_mod
    from ..data.template import resolve_chat_template
    from ..data.tool_format import with_tool_format

    tok = model_mod.load_tokenizer(model_mod.ResolvedModel(target.tokenizer_dir, target.tokenizer_dir, "local"))
    if isinstance(tok.chat_template, str) and tok.chat_template.strip():
        tok.chat_template = with_tool_format(tok.chat_template, "run", "auto", tok)[0]
    else:
        tok.chat_template = resolve_chat_template(tok, target.template_choice)[0]
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def key_of(target: Target) -> str:
    """The id transformers' server knows a target by: its folder (an existing path is kept as it is)."""
    return target.ref
