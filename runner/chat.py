"""The chat engine: load a run (or a model), then stream replies with the run's own template.

Used by the plain REPL (`tuneforge chat RUN --plain`), the chat screen and tests. A run's
adapter/ or model/ folder carries the tokenizer and chat template it was trained with, so the
conversation is rendered exactly as the training data was. `ChatModel.base()` gives the same
conversation to the model before fine-tuning (compare mode): for a LoRA run it is the same
weights with the adapter switched off, so comparing costs no extra memory.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterator

import yaml

from . import model as model_mod
from .errors import TuneforgeError


@dataclass
class Sampling:
    """How replies are drawn. Every field can be changed in the chat with `/set name=value`."""

    temperature: float = 0.0  # 0 = greedy, reproducible
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 256
    repetition_penalty: float = 1.0

    HELP = {
        "temperature": "0 = greedy (same reply every time); 0.7 is a common creative setting",
        "top_p": "sample only from the smallest set of tokens whose probability adds up to top_p (0-1]",
        "top_k": "sample only from the k most likely tokens (0 = off)",
        "max_new_tokens": "longest reply, in tokens",
        "repetition_penalty": "above 1.0 discourages repeating tokens (1.0 = off)",
    }

    def set(self, name: str, raw: str) -> None:
        """Set one field from text, checking its range; raises TuneforgeError with the fix."""
        names = [f.name for f in fields(self)]
        if name not in names:
            import difflib

            close = difflib.get_close_matches(name, names, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise TuneforgeError(f"unknown setting '{name}'", f"{hint}settings: {', '.join(names)}")
        kind = int if name in {"top_k", "max_new_tokens"} else float
        try:
            value = kind(raw)
        except ValueError:
            raise TuneforgeError(f"{name} must be {'a whole number' if kind is int else 'a number'}, not '{raw}'",
                                 f"{name}: {self.HELP[name]}") from None
        ok = {
            "temperature": value >= 0, "top_p": 0 < value <= 1, "top_k": value >= 0,
            "max_new_tokens": value >= 1, "repetition_penalty": value > 0,
        }[name]
        if not ok:
            raise TuneforgeError(f"{name} = {raw} is out of range", f"{name}: {self.HELP[name]}")
        setattr(self, name, value)

    def describe(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


@dataclass
class Stats:
    """Timing of one reply. `ttft_s` is from sending to the first text the user can see."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    ttft_s: float | None = None
    total_s: float = 0.0
    first_token_at: float | None = None  # seconds after sending, model side
    stopped: bool = False

    @property
    def tokens_per_s(self) -> float | None:
        """Decoding speed after the first token (prefill excluded)."""
        if self.first_token_at is None or self.new_tokens < 2:
            return None
        span = self.total_s - self.first_token_at
        return (self.new_tokens - 1) / span if span > 0 else None

    def describe(self) -> str:
        if self.new_tokens == 0:
            return "no tokens generated" + (" (stopped)" if self.stopped else "")
        ttft = f"{self.ttft_s:.2f} s to first token" if self.ttft_s is not None else "no visible text"
        speed = f", {self.tokens_per_s:.1f} tokens/s" if self.tokens_per_s else ""
        return (f"{ttft}, {self.new_tokens} tokens in {self.total_s:.2f} s{speed} "
                f"(prompt {self.prompt_tokens} tokens){' — stopped' if self.stopped else ''}")


@dataclass
class ChatModel:
    model: object
    tokenizer: object
    name: str
    device: str = "cpu"
    sampling: Sampling = field(default_factory=Sampling)
    adapter_off: bool = False  # run this view with the LoRA adapter disabled (the base model)
    base_ref: str | None = None  # what base() loads for a fully fine-tuned run
    lock: threading.Lock = field(default_factory=threading.Lock)  # one generate per model at a time
    last_stats: Stats | None = None
    _base: "ChatModel | None" = field(default=None, repr=False)
    _load: object = field(default=None, repr=False)  # threads.LoadFollower on CPU with an automatic count

    def __post_init__(self):
        if self.device == "cpu":
            import os

            from . import threads

            policy, _ = threads.plan(os.environ)
            if policy.follows_load:
                self._load = threads.LoadFollower(policy.threads, interval=0.5)

    def _follow_cpu_load(self) -> None:
        """Before a reply: fewer threads while other processes use this machine's CPUs (threads.LoadFollower)."""
        want = self._load.check() if self._load is not None else None
        if want is not None:
            import torch

            torch.set_num_threads(want)

    @property
    def chat_template(self) -> str:
        return self.tokenizer.chat_template

    @property
    def has_adapter(self) -> bool:
        return hasattr(self.model, "disable_adapter") and hasattr(self.model, "peft_config")

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The token ids a reply is generated after: the template's rendering with the generation prompt."""
        return list(self._encode(messages)["input_ids"][0].tolist())

    def _encode(self, messages: list[dict]):
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)

    def stream(self, messages: list[dict], sampling: Sampling | None = None, stop: threading.Event | None = None) -> Iterator[str]:
        """Yield text pieces of the reply as they are generated; `stop` ends it early.

        Statistics of the reply land in `last_stats` when the iterator is exhausted.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        s = sampling or self.sampling
        self._follow_cpu_load()
        sent = time.perf_counter()
        enc = {k: v.to(self.device) for k, v in self._encode(messages).items()}
        stats = Stats(prompt_tokens=int(enc["input_ids"].shape[1]))

        class _Streamer(TextIteratorStreamer):
            """Counts generated tokens and notes when the first one arrived."""

            def put(self, value):
                if not (self.skip_prompt and self.next_tokens_are_prompt):
                    if stats.first_token_at is None:
                        stats.first_token_at = time.perf_counter() - sent
                    stats.new_tokens += int(value.numel())
                super().put(value)

        streamer = _Streamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                return torch.full((input_ids.shape[0],), bool(stop is not None and stop.is_set()), dtype=torch.bool,
                                  device=input_ids.device)

        kwargs = dict(**enc, streamer=streamer, max_new_tokens=s.max_new_tokens, repetition_penalty=s.repetition_penalty,
                      stopping_criteria=StoppingCriteriaList([_Stop()]), pad_token_id=self.tokenizer.pad_token_id)
        if s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or None)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        errors: list[BaseException] = []

        def work():
            try:
                with self.lock, torch.inference_mode():
                    if self.adapter_off:
                        with self.model.disable_adapter():
                            self.model.generate(**kwargs)
                    else:
                        self.model.generate(**kwargs)
            except BaseException as exc:  # surfaced in the caller's thread
                errors.append(exc)
                streamer.on_finalized_text("", stream_end=True)

        thread = threading.Thread(target=work, daemon=True, name=f"generate-{self.name}")
        thread.start()
        for piece in streamer:
            if piece and stats.ttft_s is None:
                stats.ttft_s = time.perf_counter() - sent
            yield piece
        thread.join()
        stats.total_s = time.perf_counter() - sent
        stats.stopped = bool(stop is not None and stop.is_set())
        self.last_stats = stats
        if errors:
            raise errors[0]

    def reply(self, messages: list[dict], sampling: Sampling | None = None) -> str:
        return "".join(self.stream(messages, sampling))

    def warmup(self) -> None:
        """One tiny generation, so the first real reply does not pay for lazy initialisation."""
        for _ in self.stream([{"role": "user", "content": "Hi"}], Sampling(max_new_tokens=2)):
            pass
        self.last_stats = None

    def base(self) -> "ChatModel":
        """The model before fine-tuning, talking through the same template (compare mode).

        Pass the sampling to `stream` explicitly: the base keeps the Sampling it was made with.
        """
        if self._base is not None:
            return self._base
        if self.has_adapter:
            self._base = ChatModel(self.model, self.tokenizer, "base", self.device, self.sampling,
                                   adapter_off=True, lock=self.lock)
        elif self.base_ref:
            from . import device as device_mod

            place = device_mod.choose(self.device, "auto")
            resolved = model_mod.resolve(self.base_ref)
            m = model_mod.load_model(resolved, _dtype_for(place)).to(self.device).eval()
            self._base = ChatModel(m, self.tokenizer, f"base ({self.base_ref})", self.device, self.sampling)
        else:
            raise TuneforgeError(f"'{self.name}' has no base model to compare with",
                                 "compare needs a run directory or --adapter DIR on top of a model")
        return self._base

    @property
    def can_compare(self) -> bool:
        return self.has_adapter or bool(self.base_ref)


def _dtype_for(place) -> str:
    return "bf16" if place.device.startswith("cuda") and place.precision == "bf16" else "fp32"


def resolve_target(target: str, runs_dir: str = "runs") -> str:
    """A run directory, a run name under runs_dir, or a model reference -> what `load` takes.

    Cheap (no torch): a run without final weights is reported here, before anything loads.
    """
    from .rundir import RunDir, find_run

    path = Path(target)
    if not path.exists():
        try:
            path = find_run(target, runs_dir).path
        except TuneforgeError:
            return target  # a model alias or hub id
    if (path / "recipe.yaml").is_file():
        run = RunDir(path)
        refuse_reward_model(run)
        if run.weights is None:
            raise TuneforgeError(f"run '{target}' has no final weights yet (state: {run.read_status().get('state', 'unknown')})",
                                 "wait for it to finish, or chat with the base model: tuneforge chat smollm2-135m")
    return str(path)


def refuse_reward_model(run) -> None:
    """A stage rm run scores replies, it does not write them: say so before anything loads."""
    try:
        stage = (yaml.safe_load(run.recipe.read_text(encoding="utf-8")) or {}).get("stage")
    except (OSError, yaml.YAMLError, AttributeError):
        return
    if stage == "rm":
        raise TuneforgeError(f"run '{run.name}' is a reward model (stage rm): it scores replies, it does not chat",
                             f"score pairs with it: tuneforge score {run.path} --data FILE")


def load(ref: str, adapter: str | None = None, device: str = "auto", warmup: bool = True) -> ChatModel:
    """Load a run directory (its base model + adapter, or its full model) or a model reference."""
    from . import device as device_mod
    from . import rundir
    from .data.template import resolve_chat_template

    place = device_mod.choose(device, "auto")
    dtype = _dtype_for(place)
    path = Path(ref)
    template_choice, base_ref = "auto", None
    if (path / "recipe.yaml").is_file():
        run = rundir.RunDir(path)
        recipe = yaml.safe_load(run.recipe.read_text(encoding="utf-8")) or {}
        spec = recipe.get("model") or {}
        template_choice = spec.get("chat_template", "auto")
        resolve_target(ref)  # a clear error when the run has no final weights yet
        refuse_reward_model(run)
        weights = run.weights
        if weights.name == "model":
            resolved = model_mod.ResolvedModel(str(weights), str(weights), "local")
            base_spec = {}
            base_ref = spec.get("name_or_path", model_mod.EMBEDDED_ALIAS)
        else:
            base_spec = spec
            resolved = model_mod.resolve_base(base_spec)  # an earlier run's merged result for model.from_run
            adapter = str(weights)
        tok_dir = str(weights)
        name = run.name
    else:
        resolved = model_mod.resolve(ref)
        base_spec, tok_dir, name = {}, resolved.path, ref
        if adapter and (Path(adapter) / "tokenizer_config.json").is_file():
            tok_dir = adapter  # an adapter saved by tuneforge carries the template it was trained with
    tok_source = model_mod.ResolvedModel(tok_dir, tok_dir, "local") if Path(tok_dir).is_dir() else resolved
    tok = model_mod.load_tokenizer(tok_source, base_spec.get("revision"), bool(base_spec.get("trust_remote_code")))
    if not (isinstance(tok.chat_template, str) and tok.chat_template.strip()):
        # A run saves its template with the weights; a bare model may have none: use the same
        # fallback training would (chatml), so chatting a base model matches training on it.
        tok.chat_template = resolve_chat_template(tok, template_choice)[0]
    # a run's adapter goes on the model it was trained on (following model.from_run); else the model itself
    model = model_mod.load_model(resolved, dtype, base_spec.get("revision"), bool(base_spec.get("trust_remote_code")))
    if adapter:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").is_file():
            raise TuneforgeError(f"'{adapter}' is not a LoRA adapter folder (no adapter_config.json)",
                                 "point --adapter at a run's adapter/ folder")
        model = PeftModel.from_pretrained(model, adapter)
    model.to(place.device).eval()
    engine = ChatModel(model, tok, name, place.device, base_ref=base_ref)
    if warmup:
        engine.warmup()
    return engine
