"""The frozen reference of DPO and KTO (dpo/kto.reference.kind):

- base: the policy's own weights with the adapter switched off (TRL's default for a peft model):
  no second copy in memory;
- model: another model or run, loaded frozen beside the policy (a run: its result with adapters
  merged, model.run_result_folder);
- precomputed: the reference log-probs computed once before training (the model before training,
  adapter off) and cached under the tuneforge cache's refs/ folder, keyed by the tokenized rows
  and a fingerprint of the reference weights; no reference pass while training.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

log = logging.getLogger("tuneforge")


def _resolve(name: str):
    from .. import model as model_mod

    if (Path(name) / "recipe.yaml").is_file():
        return model_mod.resolve_base({"from_run": name})
    return model_mod.resolve(name)


def load_reference(ctx, ref):
    """The frozen reference model for kind 'model' (None for the other kinds)."""
    if ref.kind != "model":
        return None
    from .. import cpu_attention, methods
    from .. import model as model_mod

    resolved = _resolve(ref.model)
    opts = methods.load_options(ctx.recipe, ctx.placement)
    opts["dtype"] = "bf16" if ctx.placement.precision == "bf16" else opts["dtype"]  # frozen: half precision is enough
    model = model_mod.load_model(resolved, **opts, task="causal")
    cpu_attention.use(model, ctx.recipe.data.max_length, ctx.placement.device)
    model.config.use_cache = False
    model.requires_grad_(False)
    ctx.say(f"reference: {ref.model} ({resolved.path}), frozen beside the policy")
    return model.eval()


def fingerprint(ctx, ref) -> str:
    """What the reference log-probs depend on besides the rows: the reference weights and how they run."""
    from .. import model as model_mod

    resolved = _resolve(ref.model) if ref.kind == "model" else ctx.resolved
    parts = [resolved.path, ctx.placement.precision, ctx.recipe.stage, str(ctx.recipe.seed)]
    folder = Path(resolved.path)
    if folder.is_dir():
        parts += [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(folder.glob("*.safetensors"))]
    parts.append(model_mod.__name__)
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def cache_file(key: str) -> Path:
    from ..paths import cache_dir

    return cache_dir() / "refs" / f"{key}.pt"


def precompute(trainer, dataset, name: str, batch_size: int, ref_key: str, columns: tuple[str, ...]):
    """`dataset` with the reference log-probs as extra columns, computed once per rows + reference
    (trainer.compute_ref_log_probs on each padded batch: no_grad, adapter off) and cached."""
    import os

    import torch
    from torch.utils.data import DataLoader

    from .rows import fingerprint as rows_fingerprint

    rows = {c: list(dataset[c]) for c in dataset.column_names if not c.startswith("ref_")}
    key = hashlib.sha256(f"{ref_key}|{name}|{rows_fingerprint(rows)}".encode()).hexdigest()[:24]
    path = cache_file(key)
    if path.is_file():
        values = torch.load(path)
        log.info("reference log-probs for %s: from the cache (%s)", name, path)
    else:
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=trainer.data_collator, shuffle=False)
        model = trainer.ref_model or trainer.model
        parts: dict[str, list] = {c: [] for c in columns}
        for batch in loader:
            out = trainer.compute_ref_log_probs(model, trainer._prepare_inputs(batch))
            for c, v in zip(columns, out):
                if v is not None:
                    parts[c].append(v.float().cpu())
        values = {c: torch.cat(v).tolist() for c, v in parts.items() if v}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(values, tmp)
        os.replace(tmp, path)
        log.info("reference log-probs for %s: computed once, cached in %s", name, path)
    for c, v in values.items():
        if c in dataset.column_names:
            dataset = dataset.remove_columns(c)
        dataset = dataset.add_column(c, v)
    return dataset
