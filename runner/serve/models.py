"""What `tuneforge serve` serves: runs (or models) by name, loaded the way `chat` loads them.

transformers' server keeps each model in a process of its own and asks a `ModelLoader` for its
config, processor and weights by a model id. `RunLoader` answers for tuneforge targets: the id is
the run name, the weights are the run's base with its LoRA adapter merged in memory (or its full
model), and the tokenizer carries the run's saved chat template, so served prompts are the prompts
the run was trained on. It is pickled into each model process, so it holds only plain data.
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


def _base_loader():
    from transformers.cli.serving.model_manager import ModelLoader

    return ModelLoader


class RunLoader(_base_loader()):
    """A transformers `ModelLoader` for tuneforge targets, keyed by the id transformers gives them."""

    def __init__(self, served: list[Target], device: str = "auto"):  # noqa: D107 - no ModelLoader settings apply
        self.by_key = {key_of(t): t for t in served}
        self.device = device

    def target(self, model_id: str) -> Target:
        try:
            return self.by_key[model_id]
        except KeyError:
            raise ValueError(f"model '{model_id}' is not served") from None

    def load_config(self, model_id: str):
        from transformers import AutoConfig, GenerationConfig

        t = self.target(model_id)
        config = AutoConfig.from_pretrained(t.config_dir)
        try:
            gen = GenerationConfig.from_pretrained(t.config_dir)
        except OSError:
            gen = GenerationConfig.from_model_config(config)
        return config, gen

    def load_processor(self, model_id: str):
        return load_tokenizer(self.target(model_id))

    def load_model_and_processor(self, model_id: str, on_progress=None):
        """In the model's process: `chat.load` (base + adapter, or the full model), the adapter merged."""
        from .. import chat, threads

        threads.apply()
        engine = chat.load(self.target(model_id).ref, device=self.device, warmup=False)
        model = engine.model
        if engine.has_adapter:
            model = model.merge_and_unload()  # one set of weights: what continuous batching runs
        model.eval()
        return model, load_tokenizer(self.target(model_id))


def key_of(target: Target) -> str:
    """The id transformers' server knows a target by: its folder (an existing path is kept as it is)."""
    return target.ref
