"""Memory and time estimate for a recipe on this machine, without loading the weights.

Reads the model's config.json (runner/model_config.py) and the weights' file size, tokenizes a
sample of the data for its length distribution (data.tokenize_for), and adds up what a training step holds at its peak: weights, gradients,
optimizer states, activations (per layer and the logits, the largest term for small models with
big vocabularies) and the runtime itself. On CPU the figure is peak RSS; on CUDA, GPU memory.
The time per epoch counts FLOPs per token at a measured matmul rate. What the training stage adds
(two sequences per pair, a reference model's copy or forward, pt's packed blocks, rm's score head)
comes from estimate_stages.py. The constants were fitted
to measured peaks and epoch times (tests/test_estimate.py keeps both honest: ±30%).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

GiB = 1024**3
MiB = 1024**2
RUNTIME_BYTES = 700 * MiB  # python + torch + transformers/peft/datasets + Trainer + tokenizer, measured on CPU
# QLoRA on CPU measured this much above the terms below in every bench run (bitsandbytes' CPU
# backend and its dequantization buffers; 776-1055 MiB at batch 8 x 512 on SmolLM2-135M)
QLORA_CPU_RUNTIME_BYTES = 800 * MiB
ACT_BYTES_PER_TOKEN_LAYER = (40, 8)  # bytes per token per layer: 40 * hidden + 8 * intermediate (bf16 autocast, measured)
LOGIT_BYTES_PER_TOKEN = 14  # per vocab entry: bf16 logits + fp32 upcast + log-softmax + their gradient
# training computes logits only where a label is predicted (head_loss.label_positions_loss): the
# labelled share of the data's tokens (measured from a sample; this when unknown)
LABELLED_SHARE = 0.5
# eager attention (CPU training, rows up to cpu_attention.EAGER_CPU_MAX_QUERY tokens) keeps its scores:
# batch x heads x length^2 elements per layer, ~7.6 bytes each measured (fp32 softmax + bf16 copies)
ATTN_SCORE_BYTES = 8
CKPT_ACT_FACTOR = 0.12  # activations kept with gradient checkpointing (layer inputs + one layer's worth)

# Time. FLOPs per token: 2 per weight used forward, 2 more backward for the input gradients and 2 per
# trainable weight for the weight gradients (checkpointing repeats the forward); the decoder's linear
# layers see every token, the output head only the labelled positions (head_loss.label_positions_loss).
# EFFICIENCY = the rate training reaches / the matmul rate matmul_flops() measures in that precision.
# Measured with SmolLM2-135M on a shared 2-core AMD EPYC (Zen 4: AVX-512 with avx512_bf16), in CPU
# seconds (wall time there depended on the other users), the 1024^2 matmul at 73-90 GFLOP/s fp32 and
# 190 GFLOP/s bf16 per CPU second, AdamW's time taken off first:
#   fp32: LoRA b4 x <=140 tokens (3 steps) 0.67 and 0.75 in two runs; LoRA b4 x <=256 (6 steps) 0.70;
#         full b2 x 128 (6 steps) 0.87 and 0.90; the report (2-core AVX2-only EPYC, quickstart,
#         2 threads, wall) 0.57. 0.8 keeps each within ±30% (the former 0.45 put fp32 epochs at 1.4-1.8x).
#   bf16: LoRA b4 x <=140 tokens 0.50, so the earlier 0.45 (native-bf16 CPUs and CUDA) stays. A CPU
#         without native bf16 emulates it (0.7 GFLOP/s) and never trains in it: device.choose.
EFFICIENCY = {"fp32": 0.8, "bf16": 0.45, "fp16": 0.45}
# One AdamW step on CPU per trainable parameter (memory-bound): 0.58 s for 134.5M fp32 parameters on
# the machine above: a fifth of a full fine-tune's time at batch 2 x 128, nothing for LoRA.
OPTIMIZER_SECONDS_PER_PARAM = 4.3e-9


@dataclass
class Estimate:
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    runtime_bytes: int
    peak_bytes: int
    available_bytes: int
    fits: bool
    seconds_per_epoch: float | None
    tokens_per_epoch: int
    checkpointing: bool
    advice: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the stage adds (estimate_stages.plan)
    once_seconds: float | None = None  # before training, once: a precomputed reference's pass

    def lines(self) -> list[str]:
        def g(b: int) -> str:
            return f"{b / GiB:.2f} GiB"

        out = [
            f"weights {g(self.weights_bytes)}, gradients {g(self.gradients_bytes)}, optimizer {g(self.optimizer_bytes)}, "
            f"activations {g(self.activations_bytes)}{' (checkpointing)' if self.checkpointing else ''}, runtime {g(self.runtime_bytes)}",
            f"peak {g(self.peak_bytes)} of {g(self.available_bytes)} available: "
            + ("fits" if self.fits else "DOES NOT FIT"),
        ]
        if self.seconds_per_epoch is not None:
            out.append(f"time per epoch ~{_duration(self.seconds_per_epoch)} ({self.tokens_per_epoch:,} tokens)")
        out += self.stage_lines()
        out += [f"advice: {a}" for a in self.advice]
        return out


    def stage_lines(self) -> list[str]:
        """What the recipe's stage added (two sequences per pair, the reference, ...), for every face."""
        once = [] if self.once_seconds is None else [
            f"before training, once: ~{_duration(self.once_seconds)} computing the reference log-probs"]
        return once + self.notes


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


@dataclass
class ModelShape:
    params: int
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    tied: bool
    linear_params: int  # in the transformer blocks (what LoRA targets and QLoRA quantizes)
    file_bytes: int  # the weights on disk (they are memory-mapped while loading)
    heads: int = 1
    model_type: str = ""


def chunked_head(recipe, shape: ModelShape) -> bool:
    """Whether training's loss runs the frozen head chunk by chunk (head_loss.head_cross_entropy): a
    method that leaves the head frozen, for a model type with a plain head."""
    if recipe.method not in ("lora", "qlora"):
        return False
    if any(m.split(".")[-1] in ("lm_head", "embed_tokens") for m in recipe.lora.modules_to_save):
        return False
    from .head_loss import plain_head_model_type

    return plain_head_model_type(shape.model_type)


def model_shape(path: str) -> ModelShape:
    """Parameter counts from config.json alone (Llama-style decoder arithmetic)."""
    from .model_config import read_config, text_config

    p = Path(path)
    cfg = text_config(read_config(p))
    h, n = cfg["hidden_size"], cfg["num_hidden_layers"]
    i = cfg.get("intermediate_size") or 4 * h
    v = cfg["vocab_size"]
    heads = cfg.get("num_attention_heads", 1)
    kv = cfg.get("num_key_value_heads") or heads
    hd = cfg.get("head_dim") or h // heads
    attn = h * heads * hd * 2 + h * kv * hd * 2
    mlp = 3 * h * i
    per_layer = attn + mlp + 2 * h
    tied = bool(cfg.get("tie_word_embeddings", False))
    params = n * per_layer + v * h * (1 if tied else 2) + h
    files = list(p.glob("*.safetensors")) + list(p.glob("*.bin"))
    return ModelShape(params, n, h, i, v, tied, n * (attn + mlp), sum(f.stat().st_size for f in files), heads,
                      cfg.get("model_type", ""))


def _lora_params(shape: ModelShape, r: int) -> int:
    # all-linear on a Llama block: 7 projections, each r * (in + out)
    h, i = shape.hidden, shape.intermediate
    return shape.layers * r * (4 * 2 * h + 3 * (h + i))


def token_counts(recipe, sample: int = 256) -> tuple[list[int], list[int], int]:
    """(token lengths, labelled tokens, number of training rows) of a sample of the real data and
    template, tokenized exactly as training will (data.tokenize_for). Lengths are per trained
    sequence: a preference pair gives two (prompt+chosen, prompt+rejected)."""
    from . import data

    m = recipe.model
    tok, template, _ = data.tokenizer_for(m.name_or_path, m.chat_template, m.revision, m.trust_remote_code)
    # what the stage asks of the data (kto.unpair, pt.concatenate), where the data layer offers it
    options = data.stage_options(recipe) if hasattr(data, "stage_options") else {}
    prep = data.tokenize_for(recipe.data, tok, template, recipe.seed, recipe.stage, sample=sample, **options)
    lengths, labelled = [], []
    for t in prep.train:
        lengths.append(len(t.input_ids))
        labelled.append(t.n_trained)
        if t.rejected_ids is not None:
            lengths.append(len(t.rejected_ids))
            labelled.append(sum(1 for x in t.rejected_labels or () if x != -100))
    return lengths, labelled, prep.total


def available_memory(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(int(device.split(":")[1]) if ":" in device else 0)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available + psutil.Process().memory_info().rss)


def matmul_flops(dtype: str = "bf16", size: int = 1024, seconds: float = 0.3, device: str = "cpu") -> float:
    """Measured dense matmul rate (FLOP/s) of this machine (or GPU) in the given precision."""
    import time

    import torch

    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype, torch.float32)
    a = torch.randn(size, size, dtype=dt, device=device)
    b = torch.randn(size, size, dtype=dt, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
        sync()
    return 2 * size**3 * n / (time.perf_counter() - t0)


def batch_tokens(lengths: list[int], batch: int, grouped: bool, packing: bool) -> tuple[float, float]:
    """(mean, largest) tokens computed per forward pass, padding included, for the batching strategy."""
    if not lengths:
        return 0.0, 0.0
    s = sorted(lengths)
    if packing:
        return sum(s) / len(s) * batch, float(sum(s[-batch:]))
    if grouped:  # sampler.LengthGroupedBatches: batches of neighbours in length order
        chunks = [s[k:k + batch] for k in range(0, len(s), batch)]
        return sum(max(c) * batch for c in chunks) / len(chunks), float(s[-1] * batch)
    rng = random.Random(0)
    tot = sum(max(rng.choice(lengths) for _ in range(batch)) * batch for _ in range(64))
    return tot / 64, float(s[-1] * batch)


def estimate(recipe, lengths: list[int] | None = None, n_examples: int | None = None, device: str | None = None,
             precision: str | None = None, flops: float | None = None, available_bytes: int | None = None,
             labelled: list[int] | None = None) -> Estimate:
    """Peak memory and time per epoch for `recipe` here. Data lengths and hardware are measured when
    not given (the data is tokenized from a sample; config.json is read, the weights are not loaded).
    labelled: labelled tokens per sequence (the share of positions whose logits training computes).
    lengths are per trained sequence (two per row for pair stages); n_examples counts rows."""
    from . import model as model_mod
    from .estimate_stages import plan, pt_blocks

    stage = plan(recipe)
    if lengths is None:
        lengths, labelled, n_examples = token_counts(recipe)
    n_examples = n_examples if n_examples is not None else len(lengths) // stage.seqs_per_row
    if recipe.stage == "pt" and recipe.pt.concatenate:  # documents joined and cut into full blocks
        lengths, n_examples = pt_blocks(lengths, n_examples, recipe.data.max_length)
        labelled = list(lengths)
    n_seqs = n_examples * stage.seqs_per_row
    if device is None or precision is None:
        from . import device as device_mod

        placement = device_mod.choose(recipe.device, recipe.precision)
        device, precision = device or placement.device, precision or placement.precision
    shape = model_shape(model_mod.resolve(recipe.model.name_or_path).path)
    from .methods import storage_dtype

    cuda = device.startswith("cuda")
    method = recipe.method
    store = {"fp32": 4, "bf16": 2, "fp16": 2}[storage_dtype(recipe, precision)]
    embed = shape.vocab * shape.hidden * (1 if shape.tied else 2)
    other = shape.params - shape.linear_params
    if method == "qlora":
        bits = recipe.qlora.bits
        per = 0.5 + (4 / 64 if not recipe.qlora.double_quant else 1.2 / 64) if bits == 4 else 1.0 + 4 / shape.hidden
        weights = int(shape.linear_params * per + other * store)
    else:
        weights = shape.params * store

    if method in ("lora", "qlora"):
        trainable = _lora_params(shape, recipe.lora.r)
        if recipe.lora.modules_to_save:
            trainable += embed if any(m in ("lm_head", "embed_tokens") for m in recipe.lora.modules_to_save) else 0
    elif method == "freeze":
        per_layer = shape.linear_params // shape.layers
        trainable = per_layer * min(recipe.freeze.layers, shape.layers) + (embed if recipe.freeze.modules else 0)
    else:
        trainable = shape.params
    gradients = trainable * 4
    opt_bytes = 2 if (method in ("full", "freeze") and recipe.full.optim == "adamw_8bit") else 8
    optimizer = trainable * opt_bytes
    if method in ("full", "freeze") and precision in ("bf16", "fp16") and not cuda:
        weights += trainable * 2  # autocast keeps a half-precision copy of trainable weights per step
    from .distributed import per_process_memory

    weights, gradients, optimizer = per_process_memory(recipe, weights, gradients, optimizer)  # per GPU under fsdp/zero

    if stage.reference == "model":  # a frozen second copy beside the policy
        ref_shape = _reference_shape(stage.reference_path, shape)
        weights += ref_shape.params * store
    batch = recipe.train.batch_size
    rows = batch * stage.seqs_per_row  # sequences per forward pass
    from .packing import packing_expected

    tokens, peak_tokens = batch_tokens(lengths, rows, recipe.speed.group_by_length, packing_expected(recipe, device))
    per_tok_layer = ACT_BYTES_PER_TOKEN_LAYER[0] * shape.hidden + ACT_BYTES_PER_TOKEN_LAYER[1] * shape.intermediate
    if precision == "fp32":
        per_tok_layer *= 2
    layer_act = peak_tokens * per_tok_layer * shape.layers
    if not cuda and lengths:  # cpu_attention: short rows run eager attention and keep its scores
        from .cpu_attention import EAGER_CPU_MAX_QUERY

        longest = max(lengths)  # packed rows too: their attention runs example by example
        eager_len = min(longest, EAGER_CPU_MAX_QUERY)
        scores = rows * shape.heads * eager_len**2 * ATTN_SCORE_BYTES * (2 if precision == "fp32" else 1)
        layer_act = max(layer_act, (rows * eager_len * per_tok_layer + scores) * shape.layers)
    share = sum(labelled) / max(sum(lengths), 1) if labelled and lengths else LABELLED_SHARE
    head_tokens = share * peak_tokens if stage.vocab_head else 0.0  # rm: a one-output score head
    if chunked_head(recipe, shape):  # one chunk's logits at a time, plus the (tokens x hidden) gradient
        from .head_loss import HEAD_CHUNK

        head_tokens = min(head_tokens, HEAD_CHUNK)
    logits = head_tokens * shape.vocab * LOGIT_BYTES_PER_TOKEN * (1.4 if precision == "fp32" else 1.0)

    runtime_bytes = 0 if cuda else RUNTIME_BYTES + (QLORA_CPU_RUNTIME_BYTES if method == "qlora" else 0)

    def total(ckpt: bool) -> tuple[int, int]:
        act = int((layer_act * CKPT_ACT_FACTOR if ckpt else layer_act) + logits)
        # loading memory-maps the checkpoint file while building the model: a peak of its own
        load = weights + (shape.file_bytes if not cuda else 0)
        if method == "qlora":  # bitsandbytes quantizes from a full-precision copy of each weight
            load += shape.params * store
        steady = weights + gradients + optimizer + act
        return act, int(max(load, steady) + runtime_bytes)

    avail = available_bytes if available_bytes is not None else available_memory(device)
    ckpt_choice = recipe.speed.gradient_checkpointing
    act, peak = total(False)
    ckpt = ckpt_choice is True or (ckpt_choice == "auto" and peak > avail * 0.9)
    if ckpt:
        act, peak = total(True)
    fits = peak <= avail * 0.9

    advice: list[str] = []
    if not fits:
        if not ckpt:
            advice.append("turn on speed.gradient_checkpointing (saves activations)")
        if method in ("lora", "full", "freeze"):
            advice.append("use method: qlora (4-bit base weights)")
        if recipe.data.max_length > 256 and lengths and max(lengths) > 256:
            advice.append(f"shorten data.max_length (now {recipe.data.max_length}; e.g. {recipe.data.max_length // 2})")
        if batch > 1:
            advice.append(f"lower train.batch_size (now {batch}) and raise train.grad_accum to keep the effective batch")

    real_tokens = int(sum(lengths) / max(len(lengths), 1) * n_seqs)
    seconds = once = None
    if lengths:
        rate = flops if flops is not None else matmul_flops(precision, device=device)
        computed = tokens / rows * n_seqs if rows else real_tokens
        head = shape.vocab * shape.hidden * share if stage.vocab_head else 0
        used = shape.linear_params + head  # weights each token meets
        flop_per_token = 2 * used * (2 + trainable / shape.params) + (2 * used if ckpt else 0)
        ref = _reference_shape(stage.reference_path, shape) if stage.reference == "model" else shape
        ref_forward = 2 * (ref.linear_params + ref.vocab * ref.hidden * share)  # no-grad: forward only
        flop_per_token += stage.no_grad_forwards * ref_forward
        seconds = computed * flop_per_token / (rate * EFFICIENCY[precision])
        if stage.precompute_forwards:
            once = computed * stage.precompute_forwards * ref_forward / (rate * EFFICIENCY[precision])
        if not cuda:
            steps = -(-n_examples // (batch * recipe.train.grad_accum)) if batch else 0
            seconds += steps * trainable * OPTIMIZER_SECONDS_PER_PARAM
        elif recipe.distributed.world_size > 1:
            seconds /= recipe.distributed.world_size  # each GPU computes its share of every batch
    return Estimate(weights, gradients, optimizer, act, runtime_bytes, peak, avail, fits, seconds,
                    real_tokens, ckpt, advice, stage.notes, once)


def _reference_shape(ref: str | None, policy: ModelShape) -> ModelShape:
    """The shape of a reference model given by path or run (config.json read), else the policy's."""
    from . import model as model_mod

    if ref:
        for candidate in (Path(ref) / "model", Path(ref)):
            try:
                return model_shape(model_mod.resolve(str(candidate)).path)
            except Exception:  # noqa: BLE001 - a run with an adapter, a hub id offline: same as the policy
                continue
    return policy


def describe(recipe) -> list[str]:
    """Estimate lines for `tuneforge validate` (never fails the command)."""
    try:
        return estimate(recipe).lines()
    except Exception as exc:  # noqa: BLE001 - an estimate is advice, not a gate
        return [f"(no estimate: {type(exc).__name__}: {exc})"]
