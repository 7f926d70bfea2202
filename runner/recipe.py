"""The recipe: the one description of a fine-tuning run, and the only schema of its settings.

These pydantic models are the single source of truth for every setting: validation messages,
`tuneforge recipe schema`, the wizard's help text and docs/recipes.md all come from the field
descriptions below. A recipe is YAML read with `yaml.safe_load` (never executed); command-line
overrides `key.sub=value` are applied on top, then everything is validated at once, local files
included (a data file that is missing is listed with the other problems). Reading the file,
overrides and error lines live in runner/recipe_io.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from . import recipe_io
from .eval.spec import EvalSpec
from .errors import RecipeError
from .recipe_io import CHAT_TEMPLATES, data_check, file_problem, looks_like_local_model, model_check, registry_check, resolve_path, run_check, template_check
from .recipe_io import parse_override  # noqa: F401 - part of this module's API (the wizard types values with it)
from .recipe_distributed import DistributedSpec, distributed_problems
from .recipe_stages import STAGE_HELP, DpoSpec, KtoSpec, OrpoSpec, PtSpec, RmSpec, SimpoSpec, Stage, stage_problems

RECIPE_VERSION = 1

class StrictModel(BaseModel):
    """Unknown keys are errors (with a 'did you mean'), never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(StrictModel):
    name_or_path: str = Field(
        "smollm2-135m",
        description="Base model: the built-in alias 'smollm2-135m' (embedded, works offline), a local "
        "Hugging Face directory, a local .gguf file, or a hub id such as 'HuggingFaceTB/SmolLM2-360M-Instruct'.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for hub ids.")
    trust_remote_code: bool = Field(
        False, description="Run Python code shipped with a hub model. Only set this for models you trust."
    )
    from_run: str | None = Field(
        None,
        description="Start from an earlier run's result (e.g. runs/my-sft before DPO): its base model with its "
        "adapter merged in, so this run's method (a new adapter for lora) trains on top. name_or_path is then "
        "taken from that run. The chain is recorded in status.json and shown by the review step.",
    )
    chat_template: str = Field(
        "auto",
        description="Chat template: 'auto' uses the tokenizer's own template (or chatml when it has none); "
        "'chatml', 'llama3', 'alpaca', 'plain' force a built-in one; a path to a .jinja file uses that file.",
    )

    @field_validator("name_or_path")
    @classmethod
    def _local_model_exists(cls, v: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        return file_problem(v, info, model_check) if base and looks_like_local_model(v, base) else v

    @field_validator("from_run")
    @classmethod
    def _run_exists(cls, v: str | None, info: ValidationInfo) -> str | None:
        return file_problem(v, info, run_check)

    @field_validator("chat_template")
    @classmethod
    def _template_exists(cls, v: str, info: ValidationInfo) -> str:
        return v if v in ("auto", *CHAT_TEMPLATES) else file_problem(v, info, template_check)


class LoraSpec(StrictModel):
    r: int = Field(16, ge=1, le=4096, description="LoRA rank: size of the low-rank update.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha: the update is scaled by alpha / r.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input (0 = none: faster, and LLaMA-Factory's default).")
    target_modules: Union[Literal["all-linear"], list[str]] = Field(
        "all-linear",
        description="Modules that get adapters: 'all-linear' (every linear layer but the output head) "
        "or a list of module names such as [q_proj, v_proj].",
    )
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="Modules trained in full and saved with the adapter, e.g. [lm_head, embed_tokens] when adding tokens.",
    )
    use_dora: bool = Field(False, description="DoRA: split each update into magnitude and direction (better at low rank, ~20% slower).")
    use_rslora: bool = Field(False, description="rsLoRA: scale the update by alpha / sqrt(r) instead of alpha / r (stable at high rank).")
    loraplus_lr_ratio: float | None = Field(
        None, ge=1.0, description="LoRA+: the B matrices learn this many times faster than A (16 is typical); none = plain LoRA."
    )
    init: Literal["default", "pissa"] = Field(
        "default", description="Adapter initialisation: 'default' (B = 0) or 'pissa' (from the principal singular vectors; converges faster)."
    )


class DatasetSpec(StrictModel):
    path: str | None = Field(
        None,
        description="A data file (.json, .jsonl, .csv, .parquet, .txt) or a folder of files of one type, relative "
        "to the recipe file or absolute; or 'hf:owner/name' for a hub dataset (needs network).",
    )
    dataset: str | None = Field(
        None, description="An entry of a LLaMA-Factory dataset_info.json registry (see 'registry'), used instead of 'path'."
    )
    registry: str | None = Field(
        None, description="The dataset_info.json file (or its folder) that 'dataset' names an entry of."
    )
    format: Literal["auto", "alpaca", "sharegpt", "openai", "text"] = Field(
        "auto", description="Row layout; 'auto' detects it from the first rows."
    )
    kind: Literal["auto", "conversation", "preference", "feedback", "text"] = Field(
        "auto",
        description="What a row teaches: a conversation, a preference pair (chosen/rejected), unpaired feedback "
        "(a desirable/undesirable label) or plain text; 'auto' decides from the columns present.",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Column names in the file, LLaMA-Factory style: prompt, query, response, history, messages, "
        "system, tools, chosen, rejected, kto_tag, text. E.g. {prompt: question, response: answer}.",
    )
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="Role tags for conversation lists: role_tag, content_tag, user_tag, assistant_tag, "
        "observation_tag, function_tag, system_tag. E.g. {role_tag: role, content_tag: content}.",
    )
    placeholders: dict[str, str] = Field(
        default_factory=dict,
        description="Text substitutions applied to every string, e.g. {name: Forge} turns '{{name}}' into 'Forge'.",
    )
    max_samples: int | None = Field(None, ge=1, description="Use at most this many rows of this dataset.")
    weight: float = Field(1.0, gt=0, description="Share of this dataset when data.mix is 'interleave'.")
    split: str = Field("train", description="Split to read from a hub dataset.")
    subset: str | None = Field(None, description="Subset (configuration) of a hub dataset.")
    revision: str | None = Field(None, description="Revision of a hub dataset.")

    @field_validator("path")
    @classmethod
    def _data_exists(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("is empty: give a data file, a folder or hf:owner/name")
        return v if v is None or v.startswith("hf:") else file_problem(v, info, data_check)

    @field_validator("registry")
    @classmethod
    def _registry_exists(cls, v: str | None, info: ValidationInfo) -> str | None:
        return file_problem(v, info, registry_check)

    @model_validator(mode="after")
    def _one_source(self) -> "DatasetSpec":
        if (self.path is None) == (self.dataset is None):
            raise ValueError("give exactly one of 'path' (a file, folder or hf:name) or 'dataset' (a registry entry)")
        return self


class DataSpec(StrictModel):
    train: list[DatasetSpec] = Field(..., min_length=1, description="Training datasets, mixed as 'mix' says.")
    eval: list[DatasetSpec] = Field(default_factory=list, description="Separate evaluation datasets.")
    eval_split: float = Field(
        0.0, ge=0.0, lt=0.5, description="Fraction of the training rows held out for eval loss (0 = none)."
    )
    mix: Literal["concat", "interleave"] = Field(
        "concat", description="'concat' uses every dataset in full; 'interleave' samples them by their 'weight'."
    )
    shuffle: bool = Field(True, description="Shuffle the training rows (seeded by the recipe's seed).")
    max_samples: int | None = Field(None, ge=1, description="Use at most this many training rows after mixing.")
    max_length: int = Field(1024, ge=16, le=1_000_000, description="Cut-off length in tokens per example.")
    truncation: Literal["keep_start", "keep_end", "drop"] = Field(
        "keep_start",
        description="Rows longer than max_length: 'keep_start' cuts the end; 'keep_end' keeps the end of the prompt "
        "and the whole last reply (cutting from the start); 'drop' leaves the row out. Every case is counted.",
    )
    train_on_prompt: bool = Field(
        False, description="Also train on system/user tokens. By default only assistant replies are trained."
    )
    last_turn_only: bool = Field(False, description="Train only on the last assistant reply of each conversation.")
    tool_format: Literal["auto", "template", "json", "qwen", "glm4"] = Field(
        "auto",
        description="How tools and tool calls are rendered: 'template' by the chat template itself; json, qwen or glm4 "
        "by a named format (tools in the system turn, calls as tagged JSON in the reply, results as a user turn); "
        "'auto' uses the template when it renders tools, else json. Saved with the run's chat template.",
    )
    on_bad_rows: Literal["auto", "error", "skip", "warn"] = Field(
        "auto",
        description="Rows that fail validation: 'error' stops; 'skip' leaves them out (listed in data_report.json); "
        "'warn' leaves them out and prints a warning; 'auto' warns up to max_bad_fraction, errors above.",
    )
    max_bad_fraction: float = Field(0.05, ge=0.0, le=1.0, description="Largest share of bad rows 'auto' accepts.")
    ignore_media: bool = Field(
        False,
        description="Rows with images, videos or audio (an images/videos/audios column or <image> markers) are refused "
        "until multimodal training exists; true trains their text alone, markers included.",
    )
    cache: bool = Field(True, description="Reuse tokenized data from the cache when data, tokenizer and options match.")


class TrainSpec(StrictModel):
    epochs: float = Field(3.0, gt=0, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(8, ge=1, le=4096, description="Examples per device per forward pass.")
    grad_accum: int = Field(1, ge=1, le=4096, description="Forward passes per optimizer step.")
    learning_rate: float = Field(2e-4, gt=0, le=1.0, description="Peak learning rate.")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0, description="Fraction of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    logging_steps: int = Field(5, ge=1, description="Write a metrics line every N optimizer steps.")
    eval_steps: int | None = Field(
        None, ge=1, description="Compute eval loss every N steps (default: at the end of each epoch)."
    )
    save_steps: int | None = Field(
        None, ge=1, description="Save a checkpoint every N steps (default: at the end of each epoch)."
    )
    save_total_limit: int = Field(2, ge=1, description="Keep at most this many checkpoints.")


class OutputSpec(StrictModel):
    runs_dir: str = Field("runs", description="Folder that holds run directories (relative to the working directory).")
    overwrite: bool = Field(False, description="Replace an existing run directory of the same name.")


class FreezeSpec(StrictModel):
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


class QLoraSpec(StrictModel):
    bits: Literal[4, 8] = Field(4, description="Store the frozen base model in 4-bit (NF4/FP4) or 8-bit (LLM.int8) via bitsandbytes.")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type: 'nf4' (normal float, better for weights) or 'fp4'.")
    double_quant: bool = Field(True, description="Also quantize the 4-bit scaling constants (saves ~0.4 bits per weight).")


class FullSpec(StrictModel):
    optim: Literal["auto", "adamw_torch", "adamw_torch_fused", "adamw_8bit"] = Field(
        "auto",
        description="Optimizer for method full/freeze: 'auto' = fused AdamW where the device supports it "
        "(CUDA, or CPU with torch >= 2.4), 'adamw_8bit' = bitsandbytes 8-bit AdamW (a quarter of the optimizer memory).",
    )


class SpeedSpec(StrictModel):
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


class Recipe(StrictModel):
    """A complete fine-tuning run. Every field has a default except the data."""

    version: Literal[1] = Field(RECIPE_VERSION, description="Recipe format version.")
    name: str | None = Field(
        None, description="Run name: the run directory is <runs_dir>/<name>. Default: a timestamp."
    )
    seed: int = Field(42, description="Random seed for data order, initialisation and dropout.")
    stage: Stage = Field(
        "sft", description="Training stage: " + "; ".join(f"'{k}' {v}" for k, v in STAGE_HELP.items())
        + ". Each stage has its own options block (dpo:, kto:, ...); see docs/stages.md.",
    )
    method: Literal["full", "freeze", "lora", "qlora"] = Field(
        "lora", description="'lora' trains small adapters on a frozen model; 'qlora' does that on a 4/8-bit base "
        "(least memory); 'freeze' trains only some layers; 'full' trains every weight. See docs/methods.md.",
    )
    model: ModelSpec = Field(default_factory=ModelSpec, description="The base model.")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA settings (method: lora and qlora).")
    qlora: QLoraSpec = Field(default_factory=QLoraSpec, description="Quantization of the frozen base (method: qlora).")
    freeze: FreezeSpec = Field(default_factory=FreezeSpec, description="Which layers train (method: freeze).")
    full: FullSpec = Field(default_factory=FullSpec, description="Optimizer for the methods that train base weights (full, freeze).")
    speed: SpeedSpec = Field(default_factory=SpeedSpec, description="Throughput: length grouping, packing, checkpointing, compile.")
    pt: PtSpec = Field(default_factory=PtSpec, description="Continued pre-training options (stage: pt).")
    rm: RmSpec = Field(default_factory=RmSpec, description="Reward-model options (stage: rm).")
    dpo: DpoSpec = Field(default_factory=DpoSpec, description="DPO options (stage: dpo).")
    kto: KtoSpec = Field(default_factory=KtoSpec, description="KTO options (stage: kto).")
    orpo: OrpoSpec = Field(default_factory=OrpoSpec, description="ORPO options (stage: orpo).")
    simpo: SimpoSpec = Field(default_factory=SimpoSpec, description="SimPO options (stage: simpo).")
    data: DataSpec = Field(..., description="Training and evaluation data.")
    train: TrainSpec = Field(default_factory=TrainSpec, description="Optimisation settings.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="'auto': bf16 autocast where the hardware supports it (CUDA >= 8.0, CPUs with "
        "avx512_bf16/AMX), fp16 on older CUDA, fp32 otherwise.",
    )
    device: str = Field("auto", description="'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="Where runs are written.")
    eval: EvalSpec = Field(default_factory=EvalSpec, description="Evaluation after (or during) training and the defaults of `tuneforge eval`; see docs/eval.md.")
    distributed: DistributedSpec = Field(default_factory=DistributedSpec, description="Several processes, GPUs or machines "
                                         "(accelerate launch): nproc, nnodes, strategy. See docs/distributed.md.")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list,
        description="Experiment trackers fed by the trainer's own integrations: tensorboard (event files in "
        "runs/<name>/tensorboard), wandb (offline when there is no login or network), mlflow.",
    )

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, v: str | None) -> str | None:
        if v is not None and (not v or "/" in v or v in {".", ".."} or v.startswith("-")):
            raise ValueError("must be a plain folder name (no '/'), e.g. 'my-run'")
        return v

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if v in {"auto", "cpu", "cuda", "mps"} or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("must be one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'")

    @model_validator(mode="after")
    def _coherent(self) -> "Recipe":
        problems = combination_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


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
    out += stage_problems(recipe)
    out += distributed_problems(recipe)
    if recipe.speed.packing is True and recipe.speed.torch_compile:
        out.append("speed.packing gives every batch a new length, so torch_compile would recompile at every step "
                   "— fix: turn off one of speed.packing or speed.torch_compile")
    return out


# ---------------------------------------------------------------------------------------------
# Loading


def resolve_paths(recipe: Recipe, base_dir: Path) -> Recipe:
    """Make every relative path absolute (relative to the recipe's folder) so the saved recipe replays."""
    for spec in [*recipe.data.train, *recipe.data.eval]:
        if spec.path and "://" not in spec.path and not spec.path.startswith("hf:"):
            spec.path = resolve_path(spec.path, base_dir)
        if spec.registry:
            spec.registry = resolve_path(spec.registry, base_dir)
    name = recipe.model.name_or_path
    if looks_like_local_model(name, base_dir):
        recipe.model.name_or_path = resolve_path(name, base_dir)
    if recipe.model.from_run:
        recipe.model.from_run = resolve_path(recipe.model.from_run, base_dir)
    for ref in (recipe.dpo.reference, recipe.kto.reference):
        if ref.model and looks_like_local_model(ref.model, base_dir):
            ref.model = resolve_path(ref.model, base_dir)
    recipe.eval.data = [p if p.startswith("hf:") else resolve_path(p, base_dir) for p in recipe.eval.data]
    if recipe.eval.bench_dir:
        recipe.eval.bench_dir = resolve_path(recipe.eval.bench_dir, base_dir)
    tpl = recipe.model.chat_template
    if tpl not in ("auto", *CHAT_TEMPLATES):
        recipe.model.chat_template = resolve_path(tpl, base_dir)
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override, validate and resolve a recipe file; local data, registry, model and template
    paths must exist. Raises RecipeError listing every problem at once."""
    path = Path(path)
    data = recipe_io.read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError([f"the top level must be a mapping of keys (model:, data:, train:, ...), not a "
                           f"{type(data).__name__}"], str(path))
    return recipe_from_dict(data, overrides or [], base_dir=path.resolve().parent, source=str(path), check_files=True)


def recipe_from_dict(data: dict, overrides: list[str] | None = None, base_dir: Path | None = None,
                     source: str = "recipe", check_files: bool = False) -> Recipe:
    """Validate a recipe given as a dict. check_files: also require the local files it names
    (relative to base_dir) to exist, as a recipe file run by `train` must."""
    if not isinstance(data, dict):
        raise RecipeError([f"a recipe is a mapping of keys, not a {type(data).__name__}"], source)
    overrides = overrides or []
    base = base_dir or Path.cwd()
    try:
        data = recipe_io.apply_overrides(copy.deepcopy(data), overrides)  # the caller's dict stays as it was
        recipe = Recipe.model_validate(data, context={"base_dir": base} if check_files else None)
    except ValidationError as err:
        done = {".".join(recipe_io.parse_override(o)[0]) for o in overrides}
        raise RecipeError(recipe_io.merge_alternatives(recipe_io.format_errors(err, Recipe, done)), source) from None
    except RecursionError:
        raise RecipeError(["the recipe is nested too deeply"], source) from None
    return resolve_paths(recipe, base)


def format_errors(err: ValidationError) -> list[str]:
    """A Recipe validation error as 'dotted.path: problem' lines (the wizard shows them per field)."""
    return recipe_io.format_errors(err, Recipe)


def recipe_to_yaml(recipe: Recipe) -> str:
    """The resolved recipe as YAML: every field written out, so it replays exactly."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def json_schema() -> dict:
    return Recipe.model_json_schema()
