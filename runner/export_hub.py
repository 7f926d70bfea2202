"""The model card of an export, and pushing the export folder to the Hugging Face hub.

The card is generated from the run directory (its resolved recipe, status and any eval results), so
what the hub shows is what was trained. Offline (HF_HUB_OFFLINE=1) a push fails before any work.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from .errors import TuneforgeError
from .rundir import RunDir


def check_can_push(repo: str) -> None:
    """Fail at once (before minutes of merging) when a push cannot happen."""
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise TuneforgeError(f"--push-to-hub '{repo}' is not a repository id", "use OWNER/NAME, e.g. --push-to-hub alice/smollm2-forge")
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise TuneforgeError("--push-to-hub needs the network, but HF_HUB_OFFLINE is set",
                             "unset HF_HUB_OFFLINE (export HF_HUB_OFFLINE=0) on a connected machine, or export without "
                             "--push-to-hub and upload the folder later: hf upload REPO FOLDER")


def _eval_results(run: RunDir) -> dict[str, Any]:
    """Eval results written into the run directory (eval/*.json or eval*.json), by file name."""
    found: dict[str, Any] = {}
    for path in sorted([*run.path.glob("eval*.json"), *run.path.glob("eval/*.json")]):
        try:
            found[str(path.relative_to(run.path))] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return found


def model_card(run: RunDir, recipe: dict[str, Any], kind: str, quant: str | None = None) -> str:
    """README.md for the export: hub metadata, then base model, stage, method, data, recipe, results."""
    model = recipe.get("model") or {}
    base = model.get("name_or_path") or "unknown"
    data = recipe.get("data") or {}
    sources = [s.get("path") or s.get("hub") or str(s) for s in (data.get("train") or []) if isinstance(s, dict)]
    status = run.read_status()
    tags = ["tuneforge", recipe.get("stage") or "sft", str(recipe.get("method") or "lora")]
    meta: dict[str, Any] = {"tags": tags + (["gguf"] if kind in ("gguf", "ollama") else [])}
    if "/" in str(base) and not Path(str(base)).exists():
        meta["base_model"] = base  # a hub id links the card to its base
    if kind == "adapter":
        meta["library_name"] = "peft"
    elif kind not in ("gguf", "ollama"):
        meta["library_name"] = "transformers"
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# {run.name}", "",
             f"Fine-tuned with [tuneforge](https://github.com/) from `{base}`.", "",
             "| | |", "| --- | --- |",
             f"| base model | `{base}` |", f"| stage | {recipe.get('stage') or 'sft'} |",
             f"| method | {recipe.get('method') or 'lora'} |", f"| export | {kind}{f' ({quant})' if quant else ''} |",
             f"| data | {', '.join(f'`{s}`' for s in sources) or 'see recipe'} |"]
    final = status.get("final") or {}
    for key in ("train_loss", "eval_loss"):
        if key in final:
            lines.append(f"| {key.replace('_', ' ')} | {final[key]} |")
    results = _eval_results(run)
    if results:
        lines += ["", "## Evaluation", ""]
        for name, value in results.items():
            lines += [f"`{name}`:", "", "```json", json.dumps(value, indent=2)[:4000], "```", ""]
    recipe_text = run.recipe.read_text(encoding="utf-8") if run.recipe.is_file() else yaml.safe_dump(recipe)
    lines += ["", "## Recipe", "", "Replay with `tuneforge train recipe.yaml`:", "", "```yaml", recipe_text.rstrip(), "```", ""]
    return "\n".join(lines)


def push(folder: Path, repo: str, private: bool = False) -> str:
    """Upload the export folder; returns the repository URL."""
    check_can_push(repo)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, commit_message="Upload from tuneforge export",
                          ignore_patterns=["tuneforge_export.json"])
    except HfHubHTTPError as exc:
        code = getattr(getattr(exc, "response", None), "status_code", None)
        fix = ("log in with a write token: hf auth login (or set HF_TOKEN)" if code in (401, 403)
               else "check the repository id and your network, then run the export again")
        raise TuneforgeError(f"pushing to {repo} failed: {exc}", fix) from exc
    return f"https://huggingface.co/{repo}"
