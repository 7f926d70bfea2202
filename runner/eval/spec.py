"""The recipe's `eval:` block (also the options of `tuneforge eval`): what to score, and when.

Kept apart from runner/recipe.py (which imports it: still the one place recipe fields are read
from) because the eval command uses the same block without a training recipe.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ..recipe_io import data_check, file_problem

MODES = ("loss", "generate", "bench")
Mode = Literal["loss", "generate", "bench"]


class EvalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data: list[str] = Field(
        default_factory=list,
        description="Data files (any format tuneforge reads) to score loss and generations on, relative to the "
        "recipe file. Empty: the recipe's data.eval files. `tuneforge eval RUN` scores these unless --data is given.",
    )
    modes: list[Mode] = Field(
        default_factory=lambda: ["loss", "generate"],
        description="'loss': loss and perplexity with the run's template and masks; 'generate': greedy replies "
        "scored against the references (BLEU-4, ROUGE-1/2/L, exact match); 'bench': multiple-choice benchmarks "
        "(tasks) through lm-eval-harness. See docs/eval.md.",
    )
    tasks: list[str] = Field(
        default_factory=list,
        description="Benchmarks for mode 'bench': mmlu, ceval, cmmlu (read offline from bench_dir) or any "
        "lm-eval task name (needs the hub unless its data is cached).",
    )
    num_fewshot: int = Field(0, ge=0, le=25, description="Worked examples before each benchmark question (0 or 5 are usual).")
    bench_dir: str | None = Field(
        None,
        description="Folder holding the offline benchmarks in their standard layouts (mmlu/, ceval/, cmmlu/; "
        "see docs/eval.md). Default: $TUNEFORGE_BENCH_DIR.",
    )
    max_samples: int | None = Field(
        None, ge=1, description="Score at most this many rows per data file and questions per benchmark subject."
    )
    max_new_tokens: int = Field(128, ge=1, le=8192, description="Longest generated reply (mode 'generate').")
    batch_size: int = Field(16, ge=1, le=1024, description="Rows per forward pass / per generate call.")
    base: bool = Field(True, description="Also score the base model on the same items and show the difference.")
    during_training: Literal["off", "end"] = Field(
        "off",
        description="Inside a training recipe: 'end' runs this evaluation when training finishes "
        "(results in runs/<name>/eval/); 'off' does not.",
    )
    every_steps: int | None = Field(
        None, ge=1,
        description="Inside a training recipe: also score loss (and generate, if listed) every N steps on the "
        "eval data; the points appear on `tuneforge plot`.",
    )

    @field_validator("data")
    @classmethod
    def _data_exist(cls, v: list[str], info: ValidationInfo) -> list[str]:
        return [p if p.startswith("hf:") else file_problem(p, info, data_check) for p in v]

    @model_validator(mode="after")
    def _modes_unique(self) -> "EvalSpec":
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"modes lists a mode twice: {self.modes}")
        if "bench" in self.modes and not self.tasks:
            raise ValueError("mode 'bench' needs tasks, e.g. tasks: [mmlu]")
        return self


def build(**options) -> EvalSpec:
    """An EvalSpec from command-line or app options (None = default); TuneforgeError naming each bad one."""
    from pydantic import ValidationError

    from ..errors import TuneforgeError

    try:
        return EvalSpec(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as err:
        lines = [f"{'.'.join(map(str, e['loc'])) or 'eval'}: {e['msg']}" for e in err.errors()]
        raise TuneforgeError("bad eval options:\n" + "\n".join(f"  - {x}" for x in lines),
                             "see tuneforge eval --help") from None


def to_args(spec: EvalSpec, data: list[str]) -> list[str]:
    """The `tuneforge eval` options that run `spec` on `data` (the app starts evals with them)."""
    args = [a for path in data for a in ("--data", path)] + ["--mode", ",".join(spec.modes)]
    args += ["--tasks", ",".join(spec.tasks)] if spec.tasks else []
    args += ["--bench-dir", spec.bench_dir] if spec.bench_dir else []
    args += ["--max-samples", str(spec.max_samples)] if spec.max_samples else []
    args += ["--num-fewshot", str(spec.num_fewshot), "--max-new-tokens", str(spec.max_new_tokens),
             "--batch-size", str(spec.batch_size)]
    return args + ([] if spec.base else ["--no-base"])
