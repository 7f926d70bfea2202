"""What TRL's preference trainers need changed to train on tuneforge's rows, in one place:

- DPOTrainer / KTOTrainer: the rows arrive tokenized (rows.py), so `_prepare_dataset` returns them
  as they are; the precomputed reference goes through reference.precompute (cached);
- CPOTrainer / ORPOTrainer (trl.experimental): they tokenize text themselves and run the full
  vocabulary head on every position; here `tokenize_row` passes tuneforge's rows through and
  `concatenated_forward` gets the per-sequence log-probs from the packed, response-only forward
  (logps.py), so their loss code (cpo_loss, odds_ratio_loss) runs unchanged.
After __init__, `finish` installs the packed response-only forward on the policy (and the reference).
"""

from __future__ import annotations

from functools import lru_cache

from . import logps


@lru_cache(maxsize=None)
def tokenized_rows(base):
    """`base` (DPOTrainer or KTOTrainer) taking tuneforge's tokenized rows."""

    class Rows(base):
        def __init__(self, *args, packed: bool = False, ref_key: str = "", ref_columns: tuple = (), **kwargs):
            self._tf_packed, self._tf_ref_key, self._tf_ref_columns = packed, ref_key, ref_columns
            super().__init__(*args, **kwargs)

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset  # rows.py made the columns from the data layer's exact tokens

        def _precompute_ref_logps(self, dataset, name, batch_size):
            from . import reference

            finish(self, self._tf_packed)  # TRL calls this from __init__: use the fast forward already
            return reference.precompute(self, dataset, name, batch_size, self._tf_ref_key, self._tf_ref_columns)

    Rows.__name__ = Rows.__qualname__ = f"{base.__name__}OnRows"
    return Rows


@lru_cache(maxsize=None)
def cpo_rows(base):
    """`base` (CPOTrainer or ORPOTrainer) on tuneforge's rows with the response-only forward.
    average: mean log-prob per reply token (ORPO always; CPO for its ipo and simpo losses)."""

    class Rows(base):
        def __init__(self, *args, packed: bool = False, **kwargs):
            self._tf_packed = packed
            super().__init__(*args, **kwargs)

        def tokenize_row(self, feature, model=None):
            return feature

        def concatenated_forward(self, model, batch):
            import torch

            average = base.__name__ == "ORPOTrainer" or self.loss_type in ("ipo", "simpo")
            ids, mask = batch["input_ids"], batch["attention_mask"]
            labels = ids.masked_fill(batch["completion_mask"] == 0, -100)
            out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
            per, kept = out.log_probs, out.label_mask
            counts = kept.sum(1).clamp(min=1)
            seq = per.sum(1) / counts if average else per.sum(1)
            n = ids.shape[0] // 2  # the batch is [chosen; rejected]
            chosen_tokens = kept[:n].sum().clamp(min=1)
            nll = -per[:n].sum() / chosen_tokens
            if base.__name__ == "CPOTrainer" and self.cpo_alpha == 0:
                nll = torch.zeros((), device=ids.device)
            mean = out.mean_logits if out.mean_logits is not None else torch.zeros_like(per)
            logits_c = ((mean[:n] * kept[:n]).sum() / chosen_tokens).detach()
            logits_r = ((mean[n:] * kept[n:]).sum() / kept[n:].sum().clamp(min=1)).detach()
            return seq[:n], seq[n:], logits_c, logits_r, nll

    Rows.__name__ = Rows.__qualname__ = f"{base.__name__}OnRows"
    return Rows


def finish(trainer, packed: bool, trl_head: bool = False) -> None:
    """Install the packed, response-only forward on the policy (and the frozen reference).
    trl_head: first give the model TRL's fused head (CPO/ORPO have none), used where ours is not."""
    unwrap = trainer.accelerator.unwrap_model
    policy = logps.bare(unwrap(trainer.model))
    if trl_head and not getattr(policy, logps.MARK, False):
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(policy, outputs=logps.OUTPUTS)
    logps.install(policy, packed)
    ref = getattr(trainer, "ref_model", None)
    if ref is not None:
        logps.install(logps.bare(unwrap(ref)), packed)


def build_cpo_family(ctx, trainer_cls, args):
    """An ORPOTrainer or CPOTrainer (SimPO) on tuneforge's pairs: the two differ only in config."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from ..trainer import trainer_class
    from . import rows
    from .base import dataset, eval_items, trainer_kwargs

    train = rows.pair_columns(ctx.data.train)
    evals = eval_items(ctx)
    trainer = trainer_class(cpo_rows(trainer_cls))(
        processing_class=ctx.tokenizer, data_collator=DataCollatorForPreference(pad_token_id=ctx.tokenizer.pad_token_id),
        train_dataset=dataset(train), eval_dataset=dataset(rows.pair_columns(evals)) if evals else None,
        lengths=rows.lengths(train, "prompt_ids", "chosen_ids", "rejected_ids"), packed=ctx.packed,
        **trainer_kwargs(ctx, args),
    )
    finish(trainer, ctx.packed, trl_head=True)
    return trainer
