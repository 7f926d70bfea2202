"""The chat engine: load a run (or a model), then stream replies with the run's own template.

Used by the plain REPL (`tuneforge chat RUN --plain`), the chat screen and tests. A run's
adapter/ or model/ folder carries the tokenizer and chat template it was trained with, so the
conversation is rendered exactly as the training data was.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import yaml

from . import model as model_mod
from .errors import TuneforgeError


@dataclass
class Sampling:
    temperature: float = 0.0  # 0 = greedy, reproducible
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    repetition_penalty: float = 1.0


@dataclass
class ChatModel:
    model: object
    tokenizer: object
    name: str
    device: str = "cpu"
    sampling: Sampling = field(default_factory=Sampling)

    def stream(self, messages: list[dict], sampling: Sampling | None = None, stop: threading.Event | None = None) -> Iterator[str]:
        """Yield text pieces of the reply as they are generated; `stop` ends it early."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        s = sampling or self.sampling
        enc = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                return bool(stop is not None and stop.is_set())

        kwargs = dict(**enc, streamer=streamer, max_new_tokens=s.max_new_tokens, repetition_penalty=s.repetition_penalty,
                      stopping_criteria=StoppingCriteriaList([_Stop()]), pad_token_id=self.tokenizer.pad_token_id)
        if s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or None)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        errors: list[BaseException] = []

        def work():
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as exc:  # surfaced in the caller's thread
                errors.append(exc)
                streamer.on_finalized_text("", stream_end=True)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        yield from streamer
        thread.join()
        if errors:
            raise errors[0]

    def reply(self, messages: list[dict], sampling: Sampling | None = None) -> str:
        return "".join(self.stream(messages, sampling))


def load(ref: str, adapter: str | None = None, device: str = "auto") -> ChatModel:
    """Load a run directory (its base model + adapter, or its full model) or a model reference."""
    from . import device as device_mod
    from . import rundir

    place = device_mod.choose(device, "auto")
    dtype = "bf16" if place.device.startswith("cuda") and place.precision == "bf16" else "fp32"
    path = Path(ref)
    if (path / "recipe.yaml").is_file():
        run = rundir.RunDir(path)
        recipe = yaml.safe_load(run.recipe.read_text(encoding="utf-8"))
        weights = run.weights
        if weights is None:
            raise TuneforgeError(f"run '{ref}' has no final weights yet (state: {run.read_status().get('state')})",
                                 "wait for it to finish, or chat with the base model: tuneforge chat smollm2-135m")
        if weights.name == "model":
            resolved = model_mod.ResolvedModel(str(weights), str(weights), "local")
            base_spec = {}
        else:
            base_spec = recipe.get("model", {})
            resolved = model_mod.resolve(base_spec.get("name_or_path", "smollm2-135m"))
            adapter = str(weights)
        tok_dir = str(weights)
        name = run.name
    else:
        resolved = model_mod.resolve(ref)
        base_spec, tok_dir, name = {}, resolved.path, ref
    tok = model_mod.load_tokenizer(model_mod.ResolvedModel(tok_dir, tok_dir, "local") if Path(tok_dir).is_dir() else resolved)
    model = model_mod.load_model(resolved, dtype, base_spec.get("revision"), bool(base_spec.get("trust_remote_code")))
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.to(place.device).eval()
    return ChatModel(model, tok, name, place.device)
