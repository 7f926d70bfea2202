"""The recipe's stage settings: one typed options block per training stage.

Kept beside runner/recipe.py (which imports these and is still the one place a reader looks for
recipe fields) because the stages are a family of their own: adding a stage adds its block here,
its module in runner/stages/ and its entry in the wizard. Each block mirrors the TRL 1.x config of
the trainer the stage runs on (DPOConfig, KTOConfig, RewardConfig, CPOConfig, ORPOConfig), with
TRL's defaults unless a description says why not.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

STAGES = ("pt", "sft", "rm", "dpo", "kto", "orpo", "simpo")
Stage = Literal["pt", "sft", "rm", "dpo", "kto", "orpo", "simpo"]
STAGE_HELP = {
    "pt": "continued pre-training on plain text (no chat template, every token trained, packed)",
    "sft": "supervised fine-tuning on conversations (only the assistant's replies are trained)",
    "rm": "a reward model: learns to score the chosen reply above the rejected one (pairs)",
    "dpo": "direct preference optimisation on chosen/rejected pairs, against a frozen reference",
    "kto": "Kahneman-Tversky optimisation on replies labelled desirable/undesirable (unpaired feedback)",
    "orpo": "odds-ratio preference optimisation: SFT and preference in one loss, no reference model (pairs)",
    "simpo": "simple preference optimisation: length-normalised reward with a margin, no reference model (pairs)",
}
# The row kinds (runner/data/schema.py) each stage trains on.
STAGE_KINDS = {"pt": ("text",), "sft": ("conversation", "text"), "rm": ("preference",), "dpo": ("preference",),
               "kto": ("feedback",), "orpo": ("preference",), "simpo": ("preference",)}
# DPOConfig.loss_type values in TRL 1.16 that stand alone ('sft' is only a term to add: see dpo.sft_weight).
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm")


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Reference(_Block):
    """Which frozen model the policy is compared with (DPO and KTO)."""

    kind: Literal["base", "model", "precomputed"] = Field(
        "base",
        description="'base': the same weights with the adapter switched off (no second copy in memory; needs method "
        "lora or qlora); 'model': another model or run, loaded frozen beside the policy (set 'model'); "
        "'precomputed': the base's log-probs computed once before training and cached with the tokenized data "
        "(no reference pass while training).",
    )
    model: str | None = Field(
        None, description="For kind 'model': a run directory (runs/x), a local model folder or a hub id."
    )


class DpoSpec(_Block):
    beta: float = Field(0.1, gt=0, description="How far the policy may move from the reference: higher keeps it closer (TRL's default 0.1).")
    loss_type: Literal[DPO_LOSSES] = Field(  # type: ignore[valid-type]
        "sigmoid",
        description="The DPO loss as TRL 1.x names it: sigmoid (the paper's), hinge, ipo, exo_pair, nca_pair, robust, "
        "bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down, discopop, sigmoid_norm.",
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=0.5, description="Assumed share of pairs labelled the wrong way round (robust/cDPO losses); 0 = trust every label."
    )
    sft_weight: float = Field(
        0.0, ge=0.0, description="Add the chosen reply's SFT loss with this weight (RPO); 0 = pure preference loss."
    )
    reference: Reference = Field(default_factory=Reference, description="The frozen reference model.")


class KtoSpec(_Block):
    beta: float = Field(0.1, gt=0, description="How far the policy may move from the reference (TRL's default 0.1).")
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field("kto", description="'kto' (the paper's) or 'apo_zero_unpaired'.")
    desirable_weight: float = Field(
        1.0, gt=0, description="Weight of desirable rows' losses: raise it when they are fewer than the undesirable ones."
    )
    undesirable_weight: float = Field(1.0, gt=0, description="Weight of undesirable rows' losses.")
    unpair: bool = Field(
        False,
        description="Train on preference pairs by splitting each into a desirable (chosen) and an undesirable "
        "(rejected) row. Without it KTO needs feedback rows (a true/false label, LLaMA-Factory's kto_tag).",
    )
    reference: Reference = Field(default_factory=Reference, description="The frozen reference model.")


class OrpoSpec(_Block):
    beta: float = Field(0.1, gt=0, description="Weight of the odds-ratio term beside the SFT loss (λ in the paper; TRL's default 0.1).")


class SimpoSpec(_Block):
    beta: float = Field(2.0, gt=0, description="Scale of the length-normalised reward (the paper uses 2.0–2.5).")
    gamma: float = Field(0.5, ge=0, description="Target reward margin between chosen and rejected (TRL's simpo_gamma, 0.5).")
    sft_weight: float = Field(
        0.0, ge=0.0, description="Add the chosen reply's SFT loss with this weight (CPO's cpo_alpha; SimPO uses 0)."
    )


class RmSpec(_Block):
    center_rewards_coefficient: float | None = Field(
        None, ge=0, description="Push the mean reward towards zero with this weight (0.01 is typical); none = off."
    )
    margin_column: str | None = Field(
        None, description="A data column with how much better chosen is than rejected, added to the loss as a margin."
    )


class PtSpec(_Block):
    concatenate: bool = Field(
        True,
        description="Join the documents with the end-of-text token and cut the stream into max_length blocks: no "
        "padding, nothing dropped (LLaMA-Factory's pre-training). false: one example per document.",
    )


def _changed(block: BaseModel, default: BaseModel, prefix: str = "") -> list[str]:
    """Dotted names of the fields of `block` that differ from their defaults."""
    out = []
    for key in type(block).model_fields:
        mine, theirs = getattr(block, key), getattr(default, key)
        if isinstance(mine, BaseModel) and mine != theirs:
            out += _changed(mine, theirs, f"{prefix}{key}.")
        elif mine != theirs:
            out.append(prefix + key)
    return out


def stage_problems(recipe) -> list[str]:
    """Stage settings that cannot work together, each with the fix (added to recipe.combination_problems)."""
    out = []
    stage, method = recipe.stage, recipe.method
    blocks = {"dpo": DpoSpec, "kto": KtoSpec, "orpo": OrpoSpec, "simpo": SimpoSpec, "rm": RmSpec, "pt": PtSpec}
    for name, cls in blocks.items():
        if name != stage and getattr(recipe, name) != cls():
            given = ", ".join(f"{name}.{key}" for key in _changed(getattr(recipe, name), cls()))
            out.append(f"{given} given but stage is '{stage}' — fix: stage: {name}, or remove the {name} section")
    ref = recipe.dpo.reference if stage == "dpo" else recipe.kto.reference if stage == "kto" else None
    if ref is not None:
        if ref.kind == "base" and method not in ("lora", "qlora"):
            out.append(f"{stage}.reference.kind 'base' switches the adapter off to get the reference, but method "
                       f"'{method}' has no adapter — fix: {stage}.reference.kind: precomputed (computed once, no "
                       f"copy kept) or model (a frozen copy), or method: lora")
        if ref.kind == "model" and not ref.model:
            out.append(f"{stage}.reference.kind 'model' needs {stage}.reference.model — fix: set it to a run "
                       "directory, a model folder or a hub id, or use kind: base")
        if ref.kind != "model" and ref.model:
            out.append(f"{stage}.reference.model is set but {stage}.reference.kind is '{ref.kind}' — fix: kind: model")
    if stage == "pt" and recipe.data.train_on_prompt:
        out.append("data.train_on_prompt has no meaning for stage 'pt' (every token of plain text is trained) — fix: remove it")
    return out
