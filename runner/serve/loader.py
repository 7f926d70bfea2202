"""How a served run loads, in its model process: transformers' `ModelLoader`, for tuneforge targets.

transformers' server keeps each model in a process of its own and asks a `ModelLoader` for its
config, processor and weights by a model id. `RunLoader` answers for tuneforge targets: the weights
are the run's base with its LoRA adapter merged in memory (or its full model), and the tokenizer
carries the run's saved chat template, so served prompts are the prompts the run was trained on.
It is pickled into each model process, so it holds only plain data. Importing this module imports
transformers' serving code (torch included): only `serve.run` does.
"""

from __future__ import annotations

from transformers.cli.serving.model_manager import ModelLoader

from .models import Target, key_of, load_tokenizer


class RunLoader(ModelLoader):
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
