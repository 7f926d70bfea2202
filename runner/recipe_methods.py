"""Recipe sections for the training methods and speed settings, and the cross-field checks.

They live beside runner/recipe.py (which imports them) so the method logic stays in one place;
they are ordinary recipe sections: strict, described, part of the JSON Schema.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field

METHODS = ("full", "freeze", "lora", "qlora")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FreezeSpec(_Strict):
    layers: int = Field(
        2, ge=0, description="How many transformer layers to train (the rest stay frozen); 0 = only `modules`."
    )
    side: Literal["last", "first"] = Field(
        "last", description="Train the 'last' N layers (the usual choice: closest to the output) or the 'first' N."
    )
    modules: list[str] = Field(
        default_factory=list,
        description="Extra modules to train by name, matched against parameter names, e.g. [embed_tokens, norm, lm_head].",
    )


class QLoraSpec(_Strict):
    bits: Literal[4, 8] = Field(4, description="Store the frozen base model in 4-bit (NF4/FP4) or 8-bit (LLM.int8) via bitsandbytes.")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type: 'nf4' (normal float, better for weights) or 'fp4'.")
    double_quant: bool = Field(True, description="Also quantize the 4-bit scaling constants (saves ~0.4 bits per weight).")


class FullSpec(_Strict):
    optim: Literal["auto", "adamw_torch", "adamw_torch_fused", "adamw_8bit"] = Field(
        "auto",
        description="Optimizer for method full/freeze: 'auto' = fused AdamW where the device supports it "
        "(CUDA, or CPU with torch >= 2.4), 'adamw_8bit' = bitsandbytes 8-bit AdamW (a quarter of the optimizer memory).",
    )


class SpeedSpec(_Strict):
    group_by_length: bool = Field(
        True, description="Batch examples of similar length together so few pad tokens are computed (order stays random between groups)."
    )
    packing: Union[Literal["auto"], bool] = Field(
        "auto",
        description="Concatenate each batch into one padding-free row; attention stays within each example "
        "(per-example position ids), so nothing leaks between examples and the loss is the padded batch's. "
        "'auto' packs on CPU, where tuneforge runs attention example by example, and not on GPUs.",
    )
    gradient_checkpointing: Union[Literal["auto"], bool] = Field(
        "auto",
        description="Recompute activations in the backward pass to save memory (~30% slower): 'auto' turns it on "
        "only when the memory estimate says the run would not fit otherwise.",
    )
    torch_compile: bool = Field(False, description="Compile the model with torch.compile (slow first steps, faster later on some hardware).")
    threads: Union[int, None] = Field(
        None, ge=1,
        description="CPU threads for torch's intra-op work and the data workers. null = auto: the CPUs this process "
        "may use (affinity mask and cgroup CPU quota) divided by the local ranks of a distributed launch, or "
        "OMP_NUM_THREADS when you set it. A number overrides both. status.json records the choice under `threads`.",
    )


def combination_problems(recipe) -> list[str]:
    """Settings that cannot work together, each with the fix. Empty when the recipe is coherent."""
    out = []
    lora = recipe.lora
    if recipe.method == "qlora":
        if lora.init == "pissa":
            out.append("lora.init 'pissa' needs full-precision base weights, but method 'qlora' quantizes them "
                       "— fix: use method: lora with init: pissa, or lora.init: default with qlora")
        if recipe.device == "mps":
            out.append("method 'qlora' needs bitsandbytes, which does not run on mps "
                       "— fix: use method: lora, or device: cpu")
    if recipe.method in ("full", "freeze") and recipe.qlora != QLoraSpec():
        out.append(f"qlora settings were given but method is '{recipe.method}': a 4/8-bit base cannot be trained "
                   "directly (QLoRA trains adapters on a frozen quantized base) "
                   "— fix: method: qlora, or remove the qlora section")
    if recipe.method in ("full", "freeze") and recipe.full.optim == "adamw_8bit" and recipe.device == "mps":
        out.append("full.optim 'adamw_8bit' needs bitsandbytes, which does not run on mps — fix: full.optim: auto")
    if recipe.precision == "fp16" and recipe.device == "cpu":
        out.append("precision 'fp16' is not supported for training on CPU "
                   "— fix: precision: auto (bf16 where the CPU has it) or bf16/fp32")
    if recipe.method == "freeze" and recipe.freeze.layers == 0 and not recipe.freeze.modules:
        out.append("method 'freeze' with freeze.layers 0 and no freeze.modules trains nothing "
                   "— fix: set freeze.layers (e.g. 2) or freeze.modules (e.g. [lm_head])")
    if recipe.speed.packing is True and recipe.speed.torch_compile:
        out.append("speed.packing gives every batch a new length, so torch_compile would recompile at every step "
                   "— fix: turn off one of speed.packing or speed.torch_compile")
    return out
