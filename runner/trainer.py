"""The one Trainer subclass: the HF Trainer with tuneforge's training pieces plugged in.

- loss: the head runs only at labelled positions (head_loss.label_positions_loss), in training
  (compute_loss) and in evaluation (prediction_step);
- batches: length-grouped (sampler.LengthGroupedBatches) when asked;
- checkpoints: written atomically (checkpoints.save_atomically);
- while training: peft's fp32 round trip of adapter inputs skipped under autocast, and the
  model's loaded attention put back at the end (cpu_attention.restore).
Lifecycle concerns (status, metrics, stop requests, NaN stop, plot) are TrainerCallbacks:
runner/callbacks.py.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache

from . import checkpoints, cpu_attention
from .head_loss import accepts_logits_to_keep, label_positions_loss
from .sampler import LengthGroupedBatches


@contextmanager
def adapter_inputs_uncast(model, autocast: bool):
    """Under autocast, stop peft from casting each adapter's input to the adapter's fp32 dtype.

    peft casts the (bf16) activations to fp32 before every LoRA A matrix, and autocast casts them
    straight back to bf16 for the matmul: two copies of the layer input per adapter, forward and
    backward, for bit-identical values (tests/test_methods_speed.py). That round trip was ~10% of a
    SmolLM2-135M LoRA step on CPU. Outside training (no autocast) the casting is needed again."""
    if not autocast:
        yield
        return
    from peft.helpers import disable_input_dtype_casting

    with disable_input_dtype_casting(model):
        yield


@lru_cache(maxsize=None)
def trainer_class(base=None):
    """TuneforgeTrainer on top of `base` (HF's Trainer when None, or a TRL trainer such as
    DPOTrainer: every stage gets the same pieces), built on first use so importing this module
    does not import transformers."""
    if base is None:
        from transformers import Trainer as base

    class TuneforgeTrainer(base):
        """Trainer(..., length_grouped=True) for length-grouped batches (`lengths`: each row's
        length when the dataset has no input_ids column); everything else as the base's."""

        def __init__(self, *args, length_grouped: bool = False, lengths: list[int] | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.length_grouped, self.row_lengths = length_grouped, lengths

        def train(self, *args, **kwargs):
            try:
                with adapter_inputs_uncast(self.model, self.args.bf16 or self.args.fp16):
                    return super().train(*args, **kwargs)
            finally:
                cpu_attention.restore(self.accelerator.unwrap_model(self.model))

        def _labels_only(self, model, inputs) -> bool:
            return ("labels" in inputs and self.label_smoother is None and self.compute_loss_func is None
                    and self.model_accepts_loss_kwargs and accepts_logits_to_keep(self.accelerator.unwrap_model(model)))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or not model.training or not self._labels_only(model, inputs):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = label_positions_loss(model, inputs, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                # as Trainer.compute_loss: num_items_in_batch counts every rank's tokens and DDP averages
                # the gradients, so scale back up (without it a 2-process run logs and learns half the loss)
                loss = loss * self.accelerator.num_processes
            return loss

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            """Eval loss with the head run only at labelled positions, as in training: the
            full-vocabulary logits of a long eval batch were the peak memory of checkpointed runs."""
            if not prediction_loss_only or not self._labels_only(model, inputs):
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
            import torch

            inputs = self._prepare_inputs(inputs)
            with torch.no_grad(), self.compute_loss_context_manager():
                loss = label_positions_loss(model, inputs)
            return loss.detach(), None, None

        def _get_train_sampler(self, train_dataset=None):
            # private, but the Trainer's only seam for the sampler (get_train_dataloader would
            # have to copy its whole DataLoader set-up)
            if not self.length_grouped:
                return super()._get_train_sampler(train_dataset)
            lengths = self.row_lengths
            if lengths is None:
                ds = train_dataset if train_dataset is not None else self.train_dataset
                lengths = [len(x) for x in ds["input_ids"]]
            return LengthGroupedBatches(lengths, self.args.train_batch_size, self.args.seed)

        def _save_checkpoint(self, model, trial):
            # private, but the only place the Trainer writes and rotates checkpoints: no public
            # hook runs between writing the files and deleting older checkpoints
            checkpoints.save_atomically(self, lambda: super(TuneforgeTrainer, self)._save_checkpoint(model, trial), trial)

    TuneforgeTrainer.__name__ = TuneforgeTrainer.__qualname__ = f"Tuneforge{base.__name__}"
    return TuneforgeTrainer
