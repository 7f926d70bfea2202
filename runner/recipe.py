"""The recipe: the one description of a fine-tuning run.

These pydantic models are the single source of truth for every setting: validation messages,
`tuneforge recipe schema`, the wizard's help text and docs/recipes.md all come from the field
descriptions below. A recipe is YAML read with `yaml.safe_load` (never executed); command-line
overrides `key.sub=value` are applied on top, then everything is validated at once.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import RecipeError
from .recipe_methods import FreezeSpec, FullSpec, QLoraSpec, SpeedSpec, combination_problems

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
    chat_template: str = Field(
        "auto",
        description="Chat template: 'auto' uses the tokenizer's own template (or chatml when it has none); "
        "'chatml', 'llama3', 'alpaca', 'plain' force a built-in one; a path to a .jinja file uses that file.",
    )


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
    on_bad_rows: Literal["auto", "error", "skip", "warn"] = Field(
        "auto",
        description="Rows that fail validation: 'error' stops; 'skip' leaves them out (listed in data_report.json); "
        "'warn' leaves them out and prints a warning; 'auto' warns up to max_bad_fraction, errors above.",
    )
    max_bad_fraction: float = Field(0.05, ge=0.0, le=1.0, description="Largest share of bad rows 'auto' accepts.")
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


class Recipe(StrictModel):
    """A complete fine-tuning run. Every field has a default except the data."""

    version: Literal[1] = Field(RECIPE_VERSION, description="Recipe format version.")
    name: str | None = Field(
        None, description="Run name: the run directory is <runs_dir>/<name>. Default: a timestamp."
    )
    seed: int = Field(42, description="Random seed for data order, initialisation and dropout.")
    stage: Literal["sft"] = Field("sft", description="Training stage: 'sft' (supervised fine-tuning).")
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
    data: DataSpec = Field(..., description="Training and evaluation data.")
    train: TrainSpec = Field(default_factory=TrainSpec, description="Optimisation settings.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="'auto': bf16 autocast where the hardware supports it (CUDA >= 8.0, CPUs with "
        "avx512_bf16/AMX), fp16 on older CUDA, fp32 otherwise.",
    )
    device: str = Field("auto", description="'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="Where runs are written.")
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


# ---------------------------------------------------------------------------------------------
# Loading, overrides and error messages


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=1e-4` -> (['train', 'lr'], 0.0001). Values are typed like YAML scalars."""
    if "=" not in text:
        raise RecipeError([f"override '{text}' is not key=value (e.g. train.batch_size=4)"], "command line")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        raise RecipeError([f"override '{text}' has an empty key part"], "command line")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads '1e-4' as text; people mean a number
        try:
            value = float(value) if value.strip().lower() not in {"nan", "inf", "-inf", "infinity"} else value
        except ValueError:
            pass
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b=value` overrides to a nested dict (list items by index: data.train.0.path=x)."""
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RecipeError(
                        [f"override '{text}': '{part}' is not an index of a list of {len(node)} item(s)"],
                        "command line",
                    )
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            else:
                if last:
                    node[part] = value
                else:
                    nxt = node.get(part)
                    if not isinstance(nxt, (dict, list)):
                        nxt = node[part] = {}
                    node = nxt
    return data


def _model_at(loc: tuple, root: type[BaseModel] = None) -> type[BaseModel] | None:
    """The pydantic model class found by walking a validation-error location."""
    cls: Any = root or Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return None
        cls = _inner_model(cls.model_fields[part].annotation)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None if get_origin(annotation) is not None or not isinstance(annotation, type) else annotation


def format_errors(err: ValidationError) -> list[str]:
    """Pydantic errors as 'dotted.path: what is wrong (got X)' lines with a 'did you mean'."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            known = list(parent.model_fields) if parent else []
            guess = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
            hint = f"; did you mean '{guess[0]}'?" if guess else ""
            allowed = f" (known keys: {', '.join(known)})" if known and not guess else ""
            lines.append(f"{path}: unknown key{hint}{allowed}")
            continue
        msg = e["msg"]
        if e["type"] == "value_error" and not loc:  # cross-field checks: one line per problem
            lines.extend(str(e["ctx"]["error"]).split("; ") if e.get("ctx") else [msg])
            continue
        if e["type"] == "missing":
            parent = _model_at(loc[:-1])
            field = parent.model_fields.get(str(loc[-1])) if parent else None
            desc = f" — {field.description}" if field and field.description else ""
            lines.append(f"{path}: required field is missing{desc}")
            continue
        got = e.get("input")
        got_txt = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
        lines.append(f"{path}: {msg}{got_txt}")
    return lines


def _resolve_path(value: str, base_dir: Path) -> str:
    p = Path(os.path.expanduser(value))
    if p.is_absolute():
        return str(p)
    return str((base_dir / p).resolve())


def _looks_like_local_model(value: str, base_dir: Path) -> bool:
    if value.startswith(("/", "./", "../", "~")) or value.endswith(".gguf"):
        return True
    return (base_dir / value).exists()


def resolve_paths(recipe: Recipe, base_dir: Path) -> Recipe:
    """Make every relative path absolute (relative to the recipe's folder) so the saved recipe replays."""
    for spec in [*recipe.data.train, *recipe.data.eval]:
        if spec.path and "://" not in spec.path and not spec.path.startswith("hf:"):
            spec.path = _resolve_path(spec.path, base_dir)
        if spec.registry:
            spec.registry = _resolve_path(spec.registry, base_dir)
    name = recipe.model.name_or_path
    if _looks_like_local_model(name, base_dir):
        recipe.model.name_or_path = _resolve_path(name, base_dir)
    tpl = recipe.model.chat_template
    if tpl.endswith(".jinja"):
        recipe.model.chat_template = _resolve_path(tpl, base_dir)
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override, validate and resolve a recipe file. Raises RecipeError with every problem."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError([f"recipe file '{path}' does not exist"], "command line")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError([f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"], str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(["the top level must be a mapping of keys (model:, data:, train:, ...)"], str(path))
    return recipe_from_dict(data, overrides or [], base_dir=path.resolve().parent, source=str(path))


def recipe_from_dict(
    data: dict, overrides: list[str] | None = None, base_dir: Path | None = None, source: str = "recipe"
) -> Recipe:
    data = apply_overrides(data, overrides or [])
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(format_errors(err), source) from None
    return resolve_paths(recipe, base_dir or Path.cwd())


def recipe_to_yaml(recipe: Recipe) -> str:
    """The resolved recipe as YAML: every field written out, so it replays exactly."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def json_schema() -> dict:
    return Recipe.model_json_schema()
