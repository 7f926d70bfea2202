"""The CPU thread policy: what a boxed-in process may use (affinity, cgroup v1/v2 quota), what the
user overrides, and that a real `tuneforge train` under `taskset -c 0` runs 1 passive thread."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from runs_helpers import status, wait_for, write_recipe

from conftest import shared
from tuneforge.runner import threads

CLI = [sys.executable, "-m", "tuneforge.runner.cli"]
POLICY_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS", "OMP_WAIT_POLICY", "TUNEFORGE_THREADS_AUTO")
needs_taskset = pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) is not installed")


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without any thread settings (as a user's fresh shell), plus `extra`."""
    return {**{k: v for k, v in os.environ.items() if k not in POLICY_VARS}, **extra}


def _cgroup_v2(tmp_path: Path, cpu_max: str, rel: str = "/box") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    (root / rel.strip("/")).mkdir(parents=True)
    (root / rel.strip("/") / "cpu.max").write_text(cpu_max + "\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(f"0::{rel}\n")
    return root, proc


@pytest.mark.parametrize("cpu_max, expected, limit", [
    ("100000 100000", 1, "cgroup"),  # one CPU
    ("150000 100000", 1, "cgroup"),  # 1.5 CPUs: round down
    ("250000 100000", 2, "cgroup"),
    ("50000 100000", 1, "cgroup"),  # half a CPU: still one thread
    ("max 100000", 4, "affinity"),  # no limit
])
def test_cgroup_v2_cpu_max_limits_the_threads(tmp_path, cpu_max, expected, limit):
    root, proc = _cgroup_v2(tmp_path, cpu_max)
    budget = threads.cpu_budget(root, proc, affinity={0, 1, 2, 3})
    assert (budget.cpus, budget.limit) == (expected, limit)
    assert threads.usable_cpus(root, proc, affinity={0, 1, 2, 3}) == expected


def test_a_quota_on_a_parent_cgroup_limits_its_children(tmp_path):
    root, proc = _cgroup_v2(tmp_path, "max 100000", rel="/slice/job")
    (root / "slice" / "cpu.max").write_text("200000 100000\n")
    assert threads.usable_cpus(root, proc, affinity=set(range(8))) == 2


def test_cgroup_v1_cfs_quota(tmp_path):
    root = tmp_path / "cgroup"
    leaf = root / "cpu,cpuacct" / "docker" / "abc"
    leaf.mkdir(parents=True)
    (leaf / "cpu.cfs_quota_us").write_text("300000\n")
    (leaf / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text("5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    assert threads.cpu_budget(root, proc, affinity=set(range(8))) == threads.CpuBudget(3, "cgroup", 8, 3.0)
    (leaf / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no limit"
    assert threads.cpu_budget(root, proc, affinity=set(range(8))) == threads.CpuBudget(8, "affinity", 8, None)


def test_cgroup_v1_inside_a_container_reads_the_mount_root(tmp_path):
    """Without a cgroup namespace the container sees the host's path (/docker/abc) in /proc/self/cgroup,
    but its own cgroup mounted at the root of the hierarchy."""
    root = tmp_path / "cgroup"
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text("3:cpu:/docker/abc\n")
    assert threads.usable_cpus(root, proc, affinity={0, 1}) == 1


def test_an_affinity_mask_smaller_than_the_quota_decides(tmp_path):
    root, proc = _cgroup_v2(tmp_path, "400000 100000")
    assert threads.cpu_budget(root, proc, affinity={3}) == threads.CpuBudget(1, "affinity", 1, 4.0)


def test_no_cgroup_files_means_the_affinity_mask(tmp_path):
    assert threads.usable_cpus(tmp_path / "none", tmp_path / "none", affinity={0, 1, 2}) == 3


@needs_taskset
def test_a_process_under_taskset_sees_one_usable_cpu():
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c",
                          "from tuneforge.runner import threads; print(threads.usable_cpus())"],
                         capture_output=True, text=True, timeout=60, env=_clean_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def _budget(n: int) -> threads.CpuBudget:
    return threads.CpuBudget(n, "affinity", n, None)


def test_auto_policy_uses_the_usable_cpus_per_local_rank_and_follows_the_load():
    policy, env = threads.plan({}, budget=_budget(4))
    assert (policy.threads, policy.workers, policy.source, policy.follows_load) == (4, 4, "affinity", True)
    # several threads keep OpenMP's brief spinning (passive waiting cost 29-37% alone) and follow the load
    assert "OMP_WAIT_POLICY" not in env and policy.wait_policy == "default"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "4"
    one, env1 = threads.plan({}, budget=_budget(1))  # one thread: nothing may spin on the only CPU
    assert env1["OMP_WAIT_POLICY"] == "PASSIVE" and not one.follows_load
    assert env["RAYON_NUM_THREADS"] == "4"  # the tokenizers' worker pool
    assert threads.plan({"LOCAL_WORLD_SIZE": "2"}, budget=_budget(4))[0].threads == 2
    assert threads.plan({"LOCAL_WORLD_SIZE": "4"}, budget=_budget(2))[0].threads == 1  # at least one


def test_the_users_settings_win_and_the_recipe_wins_over_them():
    user = {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}
    policy, env = threads.plan(user, budget=_budget(2))
    assert (policy.threads, policy.source, policy.wait_policy, policy.wait_policy_source) == (3, "OMP_NUM_THREADS", "ACTIVE", "user")
    assert "OMP_NUM_THREADS" not in env and "OMP_WAIT_POLICY" not in env  # left as the user set them
    policy, env = threads.plan(user, requested=1, budget=_budget(2))
    assert (policy.threads, policy.source, env["OMP_NUM_THREADS"]) == (1, "recipe", "1")
    policy, _ = threads.plan({"OMP_NUM_THREADS": "lots"}, budget=_budget(2))
    assert policy.threads == 2 and "OMP_NUM_THREADS='lots'" in policy.describe()


def test_a_child_recomputes_what_tuneforge_chose_but_keeps_what_the_user_set():
    """A detached child may get other CPUs (a tmux server's): inherited automatic counts are redone."""
    _, parent = threads.plan({"MKL_NUM_THREADS": "2"}, budget=_budget(8))
    child, _ = threads.plan(parent, budget=_budget(1))
    assert child.threads == 1 and child.source == "affinity" and child.wait_policy_source == "tuneforge"
    env = threads.child_env({"PATH": "/bin", "MKL_NUM_THREADS": "2"})
    assert env["MKL_NUM_THREADS"] == "2" and env["PATH"] == "/bin"
    assert env["OMP_NUM_THREADS"] == str(threads.usable_cpus())
    # a parent's automatic PASSIVE (it had one CPU) is not passed on to a child with more
    _, parent1 = threads.plan({}, budget=_budget(1))
    child, updates = threads.plan(parent1, budget=_budget(2))
    assert updates["OMP_WAIT_POLICY"] is None and child.wait_policy == "default"


@needs_taskset
def test_the_users_omp_settings_reach_torch():
    code = ("import os; from tuneforge.runner import threads; p = threads.apply(); import torch; "
            "print(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'], p.source)")
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=_clean_env(OMP_NUM_THREADS="2", OMP_WAIT_POLICY="ACTIVE"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "ACTIVE", "OMP_NUM_THREADS"]


@needs_taskset
def test_a_policy_set_after_torch_loaded_says_so():
    """On one CPU the policy is PASSIVE, which OpenMP reads only when torch loads."""
    code = ("import torch; from tuneforge.runner import threads; p = threads.apply(); "
            "print(p.wait_policy_in_force); print(p.describe())")
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=_clean_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "False" and "for child processes only" in out.stdout


def _train(tmp_path, tiny_model_dir, name: str, env: dict, *overrides: str) -> dict:
    recipe = write_recipe(tmp_path, tiny_model_dir, shared("alpaca_en_demo.json"), name, max_steps=1)
    out = subprocess.run(["taskset", "-c", "0", *CLI, "train", str(recipe), *overrides, "--progress", "plain"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    run = tmp_path / "runs" / name
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished"
    return {"threads": status["threads"], "log": (run / "train.log").read_text()}


@needs_taskset
def test_training_under_taskset_runs_one_passive_thread(tiny_model_dir, tmp_path):
    got = _train(tmp_path, tiny_model_dir, "boxed", _clean_env())
    t = got["threads"]
    assert (t["torch_threads"], t["intra_op"], t["usable_cpus"], t["source"]) == (1, 1, 1, "affinity")
    assert (t["wait_policy"], t["wait_policy_source"], t["wait_policy_in_force"]) == ("PASSIVE", "tuneforge", True)
    assert "threads: 1 intra-op (1 usable CPU by the affinity mask), OMP_WAIT_POLICY=PASSIVE" in got["log"]


@needs_taskset
def test_speed_threads_in_the_recipe_overrides_omp_num_threads(tiny_model_dir, tmp_path):
    got = _train(tmp_path, tiny_model_dir, "override", _clean_env(OMP_NUM_THREADS="1"), "speed.threads=2")
    t = got["threads"]
    assert (t["torch_threads"], t["source"], t["usable_cpus"]) == (2, "recipe", 1)


@needs_taskset
def test_a_detached_run_launched_under_taskset_runs_one_passive_thread(tiny_model_dir, tmp_path):
    """The background launcher (setsid here: tmux is hidden) starts a child that keeps the policy."""
    recipe = write_recipe(tmp_path, tiny_model_dir, shared("alpaca_en_demo.json"), "bg", max_steps=1)
    env = _clean_env(PATH=os.path.dirname(sys.executable) + ":/nonexistent")  # no tmux on PATH
    out = subprocess.run([shutil.which("taskset"), "-c", "0", *CLI, "train", str(recipe), "--detach"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0 and "setsid" in out.stdout, (out.stdout, out.stderr)
    run = tmp_path / "runs" / "bg"
    st = wait_for(lambda: status(run) if status(run).get("state") in ("finished", "failed") else None, timeout=600,
                  interval=0.5, what="the detached run to end")
    assert st["state"] == "finished", (run / "console.log").read_text()[-3000:]
    t = st["threads"]
    assert (t["torch_threads"], t["source"], t["wait_policy"], t["wait_policy_in_force"]) == (1, "affinity", "PASSIVE", True)


def _stat(path, busy: tuple[int, int], idle: tuple[int, int]) -> None:
    """A /proc/stat with two CPUs: user nice system idle iowait irq softirq steal."""
    lines = ["cpu  0 0 0 0 0 0 0 0"] + [f"cpu{i} {b} 0 0 {d} 0 0 0 0" for i, (b, d) in enumerate(zip(busy, idle))]
    path.write_text("\n".join(lines + ["intr 0", "ctxt 0"]) + "\n")


def test_the_load_follower_gives_other_processes_their_cpus_back(tmp_path):
    """Two CPUs; another process keeps one busy for 2 s while this one uses 0.9 CPU-seconds."""
    stat, clock, own = tmp_path / "stat", [100.0], [5.0]
    _stat(stat, busy=(1000, 1000), idle=(0, 0))
    f = threads.LoadFollower(2, cpus={0, 1}, stat_path=stat, interval=2.0, clock=lambda: clock[0], own_cpu=lambda: own[0])
    f.hz = 100
    assert f.check() is None  # not a whole interval yet
    clock[0], own[0] = 102.0, 5.9
    _stat(stat, busy=(1000 + 200, 1000 + 90), idle=(0, 110))  # 2.9 CPU-s busy, 0.9 of it ours
    assert f.check() == 1 and abs(f.others - 1.0) < 1e-9
    clock[0], own[0] = 104.0, 9.8  # the other process ended: ours used both CPUs
    _stat(stat, busy=(1200 + 195, 1090 + 195), idle=(5, 115))
    assert f.check() == 2 and f.others < 0.1
    # CPUs outside this process's affinity never count
    g = threads.LoadFollower(1, cpus={0}, stat_path=stat, interval=0.0, clock=lambda: clock[0], own_cpu=lambda: own[0])
    assert g.check() in (None, 1)


def test_the_load_follower_sees_a_real_busy_process():
    budget = threads.usable_cpus()
    follower = threads.LoadFollower(budget, interval=1.0)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        want = None
        while want is None:
            want = follower.check()
    finally:
        hog.kill()
        hog.wait()
    assert follower.others > 0.6  # the busy loop holds about one CPU
    assert want == max(1, budget - 1)
