"""`tuneforge train --nproc N`: one run through accelerate launch (gloo on CPU), rank 0 alone writing the
run's files, the same losses as one process with the same global batch; a killed rank fails the run,
which then resumes; FSDP/ZeRO configs that accelerate itself accepts."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from tuneforge.runner import distributed, rundir
from tuneforge.runner.errors import TuneforgeError
from tuneforge.runner.recipe import recipe_from_dict

ROOT = Path(__file__).resolve().parents[1]
DATA = str(ROOT / "recipes" / "data" / "forge_identity.jsonl")


def _recipe_file(tmp_path, tiny_model_dir, **train) -> Path:
    recipe = {"model": {"name_or_path": str(tiny_model_dir), "chat_template": "chatml"}, "method": "lora",
              "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
              "data": {"train": [{"path": DATA, "max_samples": 8}], "max_length": 96},
              "train": {"max_steps": 3, "batch_size": 2, "learning_rate": 0.05, "logging_steps": 1, "warmup_ratio": 0.0, **train},
              # length grouping forms groups per device batch; off, both runs draw the same global batches
              "speed": {"group_by_length": False}, "device": "cpu", "precision": "fp32",
              "output": {"runs_dir": str(tmp_path / "runs")}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path, tiny_model_dir, run_cli):
    recipe = _recipe_file(tmp_path, tiny_model_dir)
    two = run_cli("train", str(recipe), "name=two", "--nproc", "2", "--progress", "plain", timeout=600)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    one = run_cli("train", str(recipe), "name=one", "train.batch_size=4", "--progress", "plain", timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["one", "two"]  # one run directory for both ranks
    run = runs / "two"
    m2, m1 = _metrics(run), _metrics(runs / "one")
    assert [r["step"] for r in m2] == [1, 2, 3]  # rank 0's records only, once each
    for a, b in zip(m2, m1):
        assert abs(a["loss"] - b["loss"]) <= 1e-4, (a["loss"], b["loss"])
        assert a["tokens_seen"] == b["tokens_seen"]  # global tokens: both ranks' batches counted
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["distributed"]["world_size"] == 2
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert two.stdout.count("Done. Weights") == 1  # only the launching process says it
    # The generated config replays the run with plain accelerate launch.
    config = yaml.safe_load((run / distributed.CONFIG).read_text())
    assert config["num_processes"] == 2 and config["distributed_type"] == "MULTI_GPU"
    assert "accelerate launch --config_file" in (run / distributed.LAUNCH_SH).read_text()
    # Other ranks write nothing of the run's own: their log and data report sit under .ranks/.
    assert not list((run / ".ranks").glob("*/status.json"))
    assert (run / ".ranks" / "rank-1" / "train.log").is_file()


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def test_a_killed_rank_fails_the_run_which_then_resumes(tmp_path, tiny_model_dir, run_cli):
    import psutil

    recipe = _recipe_file(tmp_path, tiny_model_dir, max_steps=40, save_steps=2)
    started = run_cli("train", str(recipe), "name=k", "--nproc", "2", "--detach", timeout=120)
    assert started.returncode == 0, started.stderr
    run = rundir.RunDir(tmp_path / "runs" / "k")
    status = _wait_for(lambda: (s := run.read_status()).get("state") == "running" and (s.get("step") or 0) >= 3 and s,
                       300, "the ranks to train a few steps")
    ranks = [p for p in psutil.Process(status["supervisor_pid"]).children(recursive=True)
             if "tuneforge.runner.cli" in " ".join(p.cmdline()) and p.environ().get("RANK") == "1"]
    assert len(ranks) == 1
    os.kill(ranks[0].pid, signal.SIGKILL)
    killed = time.monotonic()
    _wait_for(lambda: run.read_status().get("state") == "failed", 60, "the run to be marked failed")
    assert time.monotonic() - killed < 60 and "exit code" in run.read_status()["error"]
    assert not psutil.pid_exists(status["pid"]) or psutil.Process(status["pid"]).status() == psutil.STATUS_ZOMBIE

    resumed = run_cli("resume", str(run.path), "--progress", "plain", timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    final = run.read_status()
    assert final["state"] == "finished" and final["step"] == 40 and final["resumed_from"]
    assert [r["step"] for r in run.read_metrics()] == list(range(1, 41))


def test_stop_reaches_every_rank_at_the_same_step(tmp_path, tiny_model_dir, run_cli):
    recipe = _recipe_file(tmp_path, tiny_model_dir, max_steps=400, save_steps=100)
    assert run_cli("train", str(recipe), "name=s", "--nproc", "2", "--detach", timeout=120).returncode == 0
    run = rundir.RunDir(tmp_path / "runs" / "s")
    _wait_for(lambda: (s := run.read_status()).get("state") == "running" and (s.get("step") or 0) >= 3, 300, "training")
    stopped = run_cli("stop", str(run.path), timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    status = run.read_status()
    assert status["state"] == "stopped" and status["stop_reason"] == "stopped by tuneforge stop"
    checkpoint = Path(status["last_checkpoint"])  # both ranks saved the same step: each wrote its RNG state
    assert checkpoint.name == f"checkpoint-{status['step']}" and status["step"] < 400
    assert {"rng_state_0.pth", "rng_state_1.pth", "adapter_model.safetensors"} <= {p.name for p in checkpoint.iterdir()}


def _recipe(**dist):
    return recipe_from_dict({"name": "x", "data": {"train": [{"path": DATA}]}, "device": "cuda", "distributed": dist})


@pytest.mark.parametrize("strategy,offload", [("fsdp", True), ("fsdp", False), ("zero2", True), ("zero3", True), ("ddp", False)])
def test_generated_configs_are_accepted_by_accelerate(tmp_path, monkeypatch, strategy, offload):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin, patch_environment, prepare_multi_gpu_env

    monkeypatch.setattr(distributed, "check_deepspeed", lambda recipe: None)  # configs need no deepspeed
    run = rundir.RunDir(tmp_path)
    run.recipe.write_text("name: x\n")
    plan = distributed.plan(run, _recipe(nproc=4, strategy=strategy, offload=offload))
    args = launch_command_parser().parse_args(["--config_file", str(plan.config), "-m", "tuneforge.runner.cli", "train"])
    args, _, _ = _validate_launch_command(args)
    assert args.num_processes == 4
    assert (args.use_fsdp, bool(args.use_deepspeed)) == (strategy == "fsdp", strategy.startswith("zero"))
    if strategy == "fsdp":
        with patch_environment(**prepare_multi_gpu_env(args)):
            plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
        assert (plugin.cpu_offload is not None and type(plugin.cpu_offload).__name__ == "CPUOffloadPolicy") == offload
        assert plugin.state_dict_type.name == "FULL_STATE_DICT"
    if strategy.startswith("zero"):
        plugin = DeepSpeedPlugin(hf_ds_config=args.deepspeed_config_file)
        assert plugin.zero_stage == int(strategy[-1]) and plugin.offload_optimizer_device == "cpu"
        assert plugin.hf_ds_config.is_zero3() == (strategy == "zero3")
        assert plan.deepspeed == tmp_path / "deepspeed.json"


def test_multi_node_config_names_this_node(tmp_path):
    run = rundir.RunDir(tmp_path)
    run.recipe.write_text("name: x\n")
    plan = distributed.plan(run, _recipe(nproc=8, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29777))
    assert plan.config.name == "accelerate_config.node1.yaml"
    config = yaml.safe_load(plan.config.read_text())
    assert (config["num_machines"], config["num_processes"], config["machine_rank"]) == (2, 16, 1)
    assert (config["main_process_ip"], config["main_process_port"]) == ("10.0.0.1", 29777)


def test_deepspeed_strategies_say_how_to_install_it(tmp_path):
    import importlib.util

    run = rundir.RunDir(tmp_path)
    run.recipe.write_text("name: x\n")
    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(TuneforgeError, match="DeepSpeed, which is not installed") as e:
            distributed.plan(run, _recipe(nproc=2, strategy="zero3"))
        assert "tuneforge[deepspeed]" in e.value.fix
    else:
        assert distributed.plan(run, _recipe(nproc=2, strategy="zero3")).deepspeed.is_file()


@pytest.mark.parametrize("dist,extra,message", [
    ({"offload": True}, {}, "needs a sharded strategy"),
    ({"nproc": 2, "strategy": "fsdp"}, {"device": "cpu"}, "needs GPUs"),
    ({"nnodes": 2}, {"name": None}, "fixed run name"),
    ({"nnodes": 2, "node_rank": 2}, {}, "not below distributed.nnodes"),
    ({"nproc": 2, "strategy": "zero2"}, {"method": "qlora"}, "does not shard a 4-bit base"),
])
def test_impossible_distributed_recipes_are_refused_with_the_fix(dist, extra, message):
    with pytest.raises(TuneforgeError, match=message):
        recipe_from_dict({"name": "x", "data": {"train": [{"path": DATA}]}, "device": "cuda", "distributed": dist, **extra})


def test_qlora_with_fsdp_stores_4bit_weights_in_the_compute_dtype():
    import torch

    from tuneforge.runner.methods import quantization_config

    def storage(strategy):
        recipe = recipe_from_dict({"name": "x", "data": {"train": [{"path": DATA}]}, "device": "cuda", "method": "qlora",
                                   "distributed": {"nproc": 2, "strategy": strategy}})
        return quantization_config(recipe, "bf16").bnb_4bit_quant_storage

    assert storage("fsdp") == torch.bfloat16 and storage("ddp") == torch.uint8


def test_the_estimate_is_per_gpu_under_each_strategy(tiny_model_dir):
    from tuneforge.runner.estimate import estimate

    def est(**dist):
        recipe = recipe_from_dict({"name": "x", "data": {"train": [{"path": DATA}]}, "device": "cuda", "method": "full",
                                   "model": {"name_or_path": str(tiny_model_dir)}, "distributed": dist})
        return estimate(recipe, lengths=[64] * 8, n_examples=8, device="cuda", precision="bf16", flops=1e12,
                        available_bytes=80 * 2**30)

    one, ddp, fsdp = est(), est(nproc=4), est(nproc=4, strategy="fsdp")
    assert (ddp.weights_bytes, ddp.optimizer_bytes) == (one.weights_bytes, one.optimizer_bytes)  # ddp: a full copy each
    assert fsdp.weights_bytes == one.weights_bytes // 4 and fsdp.optimizer_bytes == one.optimizer_bytes // 4
    assert est(nproc=4, strategy="zero3", offload=True).optimizer_bytes == 0
    assert ddp.seconds_per_epoch == pytest.approx(one.seconds_per_epoch / 4)


def test_the_wizards_command_says_how_a_distributed_recipe_launches():
    from tuneforge.runner import services

    tf = services.command_name()  # 'tuneforge', or .venv/bin/tuneforge where that is not on PATH
    assert services.train_command("r.yaml") == f"{tf} train r.yaml"
    assert services.train_command("r.yaml", {"nproc": 1}) == f"{tf} train r.yaml"
    line = services.train_command("r.yaml", {"nproc": 4, "nnodes": 2, "strategy": "fsdp"})
    assert line.startswith(f"{tf} train r.yaml") and "accelerate launch: 8 processes, fsdp" in line


def test_visible_gpus_reads_the_driver_files_and_honours_cuda_visible_devices(tmp_path, monkeypatch):
    for i, model in enumerate(["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "NVIDIA A10"]):
        gpu = tmp_path / f"0000:0{i}:00.0"
        gpu.mkdir()
        (gpu / "information").write_text(f"Model: \t\t {model}\nIRQ:   \t\t 42\nBus Type: \t PCIe\n")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert distributed.visible_gpus(tmp_path) == ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "NVIDIA A10"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert len(distributed.visible_gpus(tmp_path)) == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert distributed.visible_gpus(tmp_path) == []
    assert distributed.visible_gpus(tmp_path / "absent") == []


@pytest.mark.parametrize("gpus", [2, 0])
def test_the_wizard_offers_every_gpu_and_the_strategy(tmp_path, monkeypatch, smollm2_dir, run_cli, gpus):
    """This machine has no GPU: the driver's answer is replaced by two names (the one stand-in here)."""
    import asyncio

    from tui_helpers import drive_wizard, wait_screen
    from tuneforge.runner import services
    from tuneforge.tui.app import TuneforgeApp

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(services, "visible_gpus", lambda: ["NVIDIA H100 80GB HBM3"] * gpus)
    from tuneforge.tui.screens import hyper

    composed = []
    body = hyper.HyperStep.body

    def recording_body(self):  # what the Hyperparameters step shows
        for widget in body(self):
            composed.append(getattr(widget, "path", None) or widget.id)
            yield widget

    monkeypatch.setattr(hyper.HyperStep, "body", recording_body)

    async def drive():
        app = TuneforgeApp(start="new")
        async with app.run_test(size=(100, 40)) as pilot:
            await drive_wizard(pilot, DATA, max_steps="2", name="multi")
            await wait_screen(pilot, "RunsScreen")

    asyncio.run(drive())
    written = yaml.safe_load((tmp_path / "multi.yaml").read_text())
    shown = {"gpus", "distributed.nproc", "distributed.strategy", "distributed.offload"} & set(composed)
    assert shown == ({"gpus", "distributed.nproc", "distributed.strategy", "distributed.offload"} if gpus else set())
    if gpus:
        assert written["distributed"]["nproc"] == 2
        assert services.train_command("multi.yaml", written["distributed"]).endswith(
            "(accelerate launch: 2 processes, ddp; the run writes accelerate_config.yaml and launch.sh)")
    else:
        assert "distributed" not in written
    out = run_cli("validate", str(tmp_path / "multi.yaml"), "--no-estimate", cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_a_later_node_joins_node_0s_run_directory(tmp_path):
    node0 = tmp_path / "runs" / "big"
    node0.mkdir(parents=True)
    (node0 / "recipe.yaml").write_text("name: big\n")  # written by node 0
    recipe = recipe_from_dict({"name": "big", "data": {"train": [{"path": DATA}]}, "device": "cuda",
                               "output": {"runs_dir": str(tmp_path / "runs")},
                               "distributed": {"nproc": 8, "nnodes": 2, "node_rank": 1}})
    run = distributed.joined_run(recipe)
    assert run.path == node0.resolve() and run.recipe.read_text() == "name: big\n"  # node 0's file untouched
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["big"]  # no big-2
