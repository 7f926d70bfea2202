"""Training on several processes, GPUs or machines through `accelerate launch` (torchrun underneath).

One run, many ranks. The launching side (services, for a recipe with `distributed.nproc * nnodes > 1`)
writes `accelerate_config.yaml` (and `deepspeed.json` for zero2/zero3) and `launch.sh` into the run
directory, then a *supervisor* runs `accelerate launch ... tuneforge train RUN/recipe.yaml --run-dir RUN`
and waits: torchrun stops every rank when one dies, and the supervisor marks the run failed when the
ranks did not end it themselves. On the rank side, `rank_view(run)` gives ranks other than 0 a run
directory whose status/metrics/log writes go nowhere (or to RUN/.ranks/), so only rank 0 writes the
run's files and final weights, and `synced_control` makes stop/checkpoint requests reach every rank
at the same step. Light at import (no torch): services and the launcher import it.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import rundir
from .errors import TuneforgeError

CONFIG = "accelerate_config.yaml"
DEEPSPEED = "deepspeed.json"
LAUNCH_SH = "launch.sh"
SUPERVISOR = "tuneforge.runner.distributed"


# --- which rank am I ----------------------------------------------------------------------------
def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def in_rank() -> bool:
    """True inside a process accelerate/torchrun started (one rank of a distributed run, even of one)."""
    return "LOCAL_RANK" in os.environ or world_size() > 1


def is_main_process() -> bool:
    """Rank 0 (or not distributed): the one process that writes the run's files."""
    return rank() == 0


class RankRunDir(rundir.RunDir):
    """The run directory as a rank other than 0 sees it: reads are the run's, writes go nowhere
    (status, metrics) or to RUN/.ranks/rank-N/ (its log and data report, for debugging)."""

    def _own(self, name: str) -> Path:
        folder = self.path / ".ranks" / f"rank-{rank()}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    log = property(lambda self: self._own("train.log"))
    data_report = property(lambda self: self._own("data_report.json"))
    metrics = property(lambda self: self._own("metrics.jsonl"))

    def update_status(self, **fields: Any) -> dict[str, Any]:
        return {**self.read_status(), **fields}

    def append_metrics(self, record: dict[str, Any]) -> None:
        pass

    def read_status(self) -> dict[str, Any]:
        return rundir.RunDir(self.path).read_status()


def rank_view(run: rundir.RunDir) -> rundir.RunDir:
    """The run directory this process may write: the run's own on rank 0, RankRunDir elsewhere.
    Other ranks' stdout goes to /dev/null too (their progress lines would repeat rank 0's);
    stderr stays, so a rank's crash is still seen."""
    if is_main_process():
        return run
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    return RankRunDir(run.path)


def synced_control(callback_cls, run: rundir.RunDir, state):
    """ControlRequests whose decisions rank 0 makes (it alone takes request files) and broadcasts, so
    every rank stops or saves at the same step (a rank that skipped a save would hang the others)."""
    import torch
    import torch.distributed as dist

    class Synced(callback_cls):
        def on_step_end(self, args, state_, control_, **kw):
            if is_main_process():
                super().on_step_end(args, state_, control_, **kw)
            flags = torch.tensor([int(control_.should_save), int(control_.should_training_stop),
                                  int(self.state.stop_signal is not None)], dtype=torch.int64)
            if dist.is_available() and dist.is_initialized():
                if dist.get_backend() == "nccl":
                    flags = flags.cuda()
                dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            control_.should_save, control_.should_training_stop = bool(flags[0]), bool(flags[1])
            if flags[2] and self.state.stop_signal is None:
                self.state.stop_signal = 0

    return Synced(run, state)


def save_final(trainer, recipe, target: Path, save, atomic_save, tok) -> None:
    """The final weights, written by rank 0 only. Sharded strategies (fsdp, zero3) first gather the
    full weights, which every rank must take part in: trainer.save_model does both."""
    if not in_rank():
        atomic_save(target, save)
        return
    if recipe.distributed.strategy in ("fsdp", "zero3"):
        import shutil

        tmp = target.with_name(target.name + ".tmp")
        if is_main_process():
            shutil.rmtree(tmp, ignore_errors=True)
        trainer.accelerator.wait_for_everyone()
        trainer.save_model(str(tmp))  # gathers on every rank, writes on rank 0
        if is_main_process():
            tok.save_pretrained(str(tmp))
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
    elif is_main_process():
        atomic_save(target, save)
    trainer.accelerator.wait_for_everyone()


def per_process_memory(recipe, weights: int, gradients: int, optimizer: int) -> tuple[int, int, int]:
    """Weights, gradients and optimizer bytes on each process (GPU) under the recipe's strategy; the
    estimator's per-GPU figure. Offloaded state lives in CPU memory, not on the GPU."""
    d = recipe.distributed
    n = d.world_size
    if d.strategy == "fsdp":
        weights, gradients, optimizer = weights // n, gradients // n, optimizer // n
        if d.offload:
            weights, optimizer = 0, 0
    elif d.strategy in ("zero2", "zero3"):
        gradients, optimizer = gradients // n, (0 if d.offload else optimizer // n)
        if d.strategy == "zero3":
            weights = 0 if d.offload else weights // n
    return weights, gradients, optimizer


def visible_gpus(proc_root: str | Path = "/proc/driver/nvidia/gpus") -> list[str]:
    """Names of the NVIDIA GPUs this process may use, read from the driver's /proc files (no torch,
    no subprocess: the wizard asks while it draws). CUDA_VISIBLE_DEVICES limits the count."""
    names = []
    for info in sorted(Path(proc_root).glob("*/information")):
        try:
            lines = info.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Model:")), "GPU")
        names.append(model)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        wanted = [v for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        names = names[:len(wanted)]
    return names


# --- the launching side ---------------------------------------------------------------------------
@dataclass
class Plan:
    config: Path
    deepspeed: Path | None
    command: list[str]  # accelerate launch ... (what the supervisor runs)

    @property
    def replay(self) -> str:
        return " ".join(shlex.quote(c) for c in self.command)


def _mixed_precision(recipe) -> str:
    mp = recipe.distributed.mixed_precision
    if mp != "auto":
        return mp
    return {"bf16": "bf16", "fp16": "fp16"}.get(recipe.precision, "no")


def accelerate_config(recipe, deepspeed_file: Path | None = None) -> dict[str, Any]:
    """accelerate's config file (`accelerate launch --config_file`) for the recipe's distributed block."""
    d = recipe.distributed
    cfg: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE", "debug": False,
        # MULTI_GPU means "start the ranks with torchrun"; on CPU each rank then runs gloo.
        "distributed_type": "MULTI_GPU", "num_machines": d.nnodes, "num_processes": d.world_size,
        "machine_rank": d.node_rank, "main_process_ip": d.master_addr, "main_process_port": d.master_port,
        "rdzv_backend": "static", "same_network": True, "mixed_precision": _mixed_precision(recipe),
        "use_cpu": False, "main_training_function": "main", "downcast_bf16": "no",
        "tpu_use_cluster": False, "tpu_use_sudo": False,
    }
    if d.strategy == "fsdp":
        cfg["distributed_type"] = "FSDP"
        cfg["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # the model's _no_split_modules (decoder layers)
            "fsdp_offload_params": d.offload,
            "fsdp_reshard_after_forward": True,  # FULL_SHARD
            "fsdp_state_dict_type": "FULL_STATE_DICT",  # rank 0 saves one ordinary model at the end
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_activation_checkpointing": bool(getattr(recipe.speed, "gradient_checkpointing", False)),
        }
    elif d.strategy in ("zero2", "zero3"):
        cfg["distributed_type"] = "DEEPSPEED"
        cfg["deepspeed_config"] = {"deepspeed_config_file": str(deepspeed_file), "zero3_init_flag": d.strategy == "zero3"}
        cfg.pop("mixed_precision")  # the DeepSpeed JSON decides ("auto": from the trainer's bf16/fp16)
    return cfg


def deepspeed_config(recipe) -> dict[str, Any]:
    """DeepSpeed JSON for zero2/zero3; "auto" values are filled in by the HF Trainer from the recipe."""
    d = recipe.distributed
    zero: dict[str, Any] = {"stage": 2 if d.strategy == "zero2" else 3, "overlap_comm": True, "contiguous_gradients": True,
                            "reduce_bucket_size": "auto"}
    if d.strategy == "zero3":
        zero.update(stage3_prefetch_bucket_size="auto", stage3_param_persistence_threshold="auto",
                    stage3_gather_16bit_weights_on_model_save=True)  # the final save is one ordinary model
    if d.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if d.strategy == "zero3":
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {"zero_optimization": zero, "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
            "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}


def check_deepspeed(recipe) -> None:
    import importlib.util

    if recipe.distributed.strategy in ("zero2", "zero3") and importlib.util.find_spec("deepspeed") is None:
        raise TuneforgeError(f"strategy '{recipe.distributed.strategy}' runs on DeepSpeed, which is not installed",
                             "pip install 'tuneforge[deepspeed]' (or pip install deepspeed), or use strategy: fsdp")


def plan(run: rundir.RunDir, recipe, resume: bool = False) -> Plan:
    """Write the configs and launch.sh into the run directory; the command the supervisor runs."""
    check_deepspeed(recipe)
    suffix = f".node{recipe.distributed.node_rank}" if recipe.distributed.nnodes > 1 else ""
    ds = None
    if recipe.distributed.strategy in ("zero2", "zero3"):
        ds = run.path / DEEPSPEED
        ds.write_text(json.dumps(deepspeed_config(recipe), indent=2) + "\n", encoding="utf-8")
    config = run.path / CONFIG.replace(".yaml", f"{suffix}.yaml")
    config.write_text(yaml.safe_dump(accelerate_config(recipe, ds), sort_keys=False), encoding="utf-8")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
               "-m", "tuneforge.runner.cli", "train", str(run.recipe), "--run-dir", str(run.path), "--progress", "plain"]
    command += ["--resume"] if resume else []
    p = Plan(config, ds, command)
    replay = ["accelerate", "launch", *command[3:]]
    (run.path / LAUNCH_SH.replace(".sh", f"{suffix}.sh")).write_text(
        "#!/bin/sh\n# Replays this run's launch with plain accelerate (what `tuneforge train --nproc` ran):\n"
        + " ".join(shlex.quote(c) for c in replay) + "\n", encoding="utf-8")
    return p


def _launched(nproc: int, nnodes: int, strategy: str) -> bool:
    return nproc * nnodes > 1 or strategy != "ddp"  # one-process FSDP/ZeRO runs go through accelerate too


def run_is_launched(run: rundir.RunDir) -> bool:
    """Whether a run's recipe.yaml asks for accelerate launch, read without building the Recipe."""
    try:
        d = (yaml.safe_load(run.recipe.read_text(encoding="utf-8")) or {}).get("distributed") or {}
        return _launched(int(d.get("nproc", 1)), int(d.get("nnodes", 1)), str(d.get("strategy", "ddp")))
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return False


def joined_run(recipe) -> rundir.RunDir:
    """Node 0's run directory (on a shared filesystem) for a node with node_rank > 0."""
    from .recipe import recipe_to_yaml

    run = rundir.RunDir((Path(recipe.output.runs_dir) / str(recipe.name)).resolve())
    run.path.mkdir(parents=True, exist_ok=True)
    if not run.recipe.is_file():
        run.recipe.write_text(recipe_to_yaml(recipe), encoding="utf-8")
    return run


def supervisor_command(run: rundir.RunDir, resume: bool) -> list[str]:
    """What a detached/background distributed run starts (the launcher spawns it): the supervisor."""
    return [sys.executable, "-m", SUPERVISOR, str(run.path)] + (["--resume"] if resume else [])


def wants_launch(recipe) -> bool:
    """Launch through accelerate: the recipe asks for it and this is not already a rank."""
    d = recipe.distributed
    return _launched(d.nproc, d.nnodes, d.strategy) and not in_rank()


def supervise(run: rundir.RunDir, recipe, resume: bool = False) -> int:
    """Run every local rank through accelerate launch and wait; mark the run failed when the ranks
    ended without saying how (a rank killed, a rendezvous that never formed). Returns the exit code."""
    from . import launcher

    p = plan(run, recipe, resume)
    main_node = recipe.distributed.node_rank == 0
    if main_node:
        run.update_status(state="starting", supervisor_pid=os.getpid(), distributed=_describe(recipe),
                          launch_command=p.replay, started_at=rundir.now_iso(), ended_at=None, error=None)
    code = launcher.run_and_wait(p.command)
    status = run.read_status()
    state = status.get("state")
    if state == "stopped" and code != 0 and "SIGTERM" in str(status.get("stop_reason")):
        state = None  # torchrun's SIGTERM after a peer died, not a stop someone asked for
    if main_node and code != 0 and state not in ("finished", "stopped", "failed"):
        run.update_status(state="failed", ended_at=rundir.now_iso(),
                          error=f"a rank ended with exit code {code} (accelerate launch stopped the others)")
    elif main_node and code != 0 and state == "failed" and not run.read_status().get("error"):
        run.update_status(error=f"a rank ended with exit code {code}")
    return code


def _describe(recipe) -> dict[str, Any]:
    d = recipe.distributed
    return {"strategy": d.strategy, "nproc": d.nproc, "nnodes": d.nnodes, "world_size": d.world_size}


def main(argv: list[str] | None = None) -> int:
    """`python -m tuneforge.runner.distributed RUN [--resume]`: the supervisor of a detached run."""
    from . import threads
    from .recipe import load_recipe

    threads.apply()
    args = list(sys.argv[1:] if argv is None else argv)
    resume = "--resume" in args
    run = rundir.RunDir(Path([a for a in args if a != "--resume"][0]).resolve())
    code = supervise(run, load_recipe(run.recipe), resume)
    return code


if __name__ == "__main__":
    sys.exit(main())
