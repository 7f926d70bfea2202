"""One CPU thread policy for every tuneforge process, applied before torch is imported.

Why: torch's OpenMP threads spin at every barrier and torch starts one per host core. Beside one
other CPU-bound process on a 2-core machine training fell to 0.17x its alone speed (0.57x with
passive waiting); in a container whose CPU quota is below the host's core count, one thread per host
core oversubscribes the quota. So every process: intra-op threads = the CPUs this process may really
use (affinity mask and cgroup v1/v2 quota, divided among the local ranks of a distributed launch),
data/tokenizer workers from the same number, and while work goes on, fewer threads while other
processes keep those CPUs busy (LoadFollower). OMP_WAIT_POLICY=PASSIVE only with a single thread:
passive waiting with several cost 29-37% alone on a 2-core Zen 4 (docs/benchmarks.md).
Overrides: the recipe's `speed.threads`, then the user's own OMP_NUM_THREADS / OMP_WAIT_POLICY.

OpenMP reads OMP_* once, when torch loads it: `apply()` must run before the first `import torch`
(the CLI's `main()` does this); a later `apply()` can still change torch's thread count.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, MutableMapping

# Variables the policy sets; the names it set itself (not the user) are listed in _AUTO, so a later
# apply() in this process or a child's knows they are tuneforge's choice and may recompute them.
_COUNT_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS")  # RAYON: the tokenizers' pool
_AUTO = "TUNEFORGE_THREADS_AUTO"
DEFAULT_WAIT = "default"  # OMP_WAIT_POLICY unset: OpenMP spins a little, then sleeps


@dataclass(frozen=True)
class CpuBudget:
    cpus: int  # CPUs this process may use (>= 1)
    limit: str  # "affinity" or "cgroup": which bound decided
    affinity: int
    quota: float | None  # the cgroup's CPU quota in CPUs, None when unlimited


@dataclass(frozen=True)
class ThreadPolicy:
    threads: int  # torch intra-op threads (OMP_NUM_THREADS)
    workers: int  # data-loading / tokenizing workers a stage may run beside it
    source: str  # "recipe", "OMP_NUM_THREADS", "affinity" or "cgroup"
    wait_policy: str  # OMP_WAIT_POLICY in force
    wait_policy_source: str  # "tuneforge" or "user"
    budget: CpuBudget
    local_ranks: int
    torch_threads: int | None = None  # torch.get_num_threads() after applying (None: torch not loaded)
    wait_policy_in_force: bool = True  # False: torch (OpenMP) loaded before the policy was set
    note: str = ""  # e.g. an unusable OMP_NUM_THREADS that was ignored
    follows_load: bool = False  # automatic count of several threads: lowered while others use our CPUs

    def describe(self) -> str:
        """One line for the start-of-run log, e.g. `threads: 1 intra-op (1 usable CPU by the
        affinity mask), OMP_WAIT_POLICY=PASSIVE, 1 data worker`."""
        b = self.budget
        cpus = f"{b.cpus} usable CPU{'s' if b.cpus != 1 else ''} by the " + (
            f"cgroup quota ({b.quota:g} CPUs; affinity {b.affinity})" if b.limit == "cgroup" else "affinity mask")
        if self.local_ranks > 1:
            cpus += f" / {self.local_ranks} local ranks"
        why = {"recipe": "speed.threads; ", "OMP_NUM_THREADS": "your OMP_NUM_THREADS; "}.get(self.source, "")
        wait = " (yours)" if self.wait_policy_source == "user" else ""
        if not self.wait_policy_in_force:
            wait += " (set after torch loaded: for child processes only)"
        if self.follows_load:
            wait += ", fewer threads while other processes use these CPUs"
        return (f"threads: {self.threads} intra-op ({why}{cpus}), OMP_WAIT_POLICY={self.wait_policy}{wait}, "
                f"{self.workers} data worker{'s' if self.workers != 1 else ''}" + (f"; {self.note}" if self.note else ""))

    def as_status(self) -> dict:
        """The `threads` entry of status.json."""
        return {"intra_op": self.threads, "torch_threads": self.torch_threads, "workers": self.workers,
                "source": self.source, "wait_policy": self.wait_policy, "wait_policy_source": self.wait_policy_source,
                "wait_policy_in_force": self.wait_policy_in_force, "follows_load": self.follows_load,
                "usable_cpus": self.budget.cpus, "cpu_limit": self.budget.limit, "affinity_cpus": self.budget.affinity,
                "cgroup_quota": self.budget.quota, "local_ranks": self.local_ranks}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _ancestors(root: Path, rel: str) -> list[Path]:
    """root/rel, its parents, up to root itself (a quota on any ancestor limits this cgroup too)."""
    parts = [p for p in rel.strip("/").split("/") if p and p != ".."]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_quota(cgroup_root: str | Path = "/sys/fs/cgroup", proc_cgroup: str | Path = "/proc/self/cgroup") -> float | None:
    """The CPU quota (in CPUs) of this process's cgroup, v2 `cpu.max` or v1 `cpu.cfs_quota_us`/
    `cpu.cfs_period_us`, the smallest along the path to the root; None when there is no limit."""
    root = Path(cgroup_root)
    text = _read(Path(proc_cgroup)) or ""
    found: list[float] = []
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, rel = fields
        if controllers == "":  # cgroup v2 (the unified hierarchy; also under unified/ on hybrid hosts)
            for base in (root, root / "unified"):
                for folder in _ancestors(base, rel):
                    raw = (_read(folder / "cpu.max") or "").split()
                    if len(raw) == 2 and raw[0] != "max":
                        try:
                            quota, period = int(raw[0]), int(raw[1])
                        except ValueError:
                            continue
                        if quota > 0 and period > 0:
                            found.append(quota / period)
        elif "cpu" in controllers.split(","):  # cgroup v1
            for name in dict.fromkeys((controllers, "cpu,cpuacct", "cpu")):
                for folder in _ancestors(root / name, rel):
                    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
                    try:
                        q, p = int(quota or ""), int(period or "")
                    except ValueError:
                        continue
                    if q > 0 and p > 0:  # -1 = no limit
                        found.append(q / p)
    return min(found) if found else None


def cpu_budget(cgroup_root: str | Path = "/sys/fs/cgroup", proc_cgroup: str | Path = "/proc/self/cgroup",
               affinity: set[int] | None = None) -> CpuBudget:
    """How many CPUs this process may use, and which bound decided."""
    if affinity is None:
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    n_aff = max(1, len(affinity))
    quota = cgroup_quota(cgroup_root, proc_cgroup)
    if quota is not None and max(1, math.floor(quota)) < n_aff:
        return CpuBudget(max(1, math.floor(quota)), "cgroup", n_aff, quota)  # 1.5 CPUs -> 1 thread
    return CpuBudget(n_aff, "affinity", n_aff, quota)


def usable_cpus(cgroup_root: str | Path = "/sys/fs/cgroup", proc_cgroup: str | Path = "/proc/self/cgroup",
                affinity: set[int] | None = None) -> int:
    """The CPUs this process may actually use: affinity mask and cgroup CPU quota, at least 1."""
    return cpu_budget(cgroup_root, proc_cgroup, affinity).cpus


def _positive_int(raw: str | None) -> int | None:
    """OMP_NUM_THREADS may be a list per nesting level ("4,2"): the first level is the thread count."""
    try:
        n = int((raw or "").split(",")[0].strip())
    except ValueError:
        return None
    return n if n >= 1 else None


def plan(env: Mapping[str, str], requested: int | None = None, local_ranks: int | None = None,
         budget: CpuBudget | None = None) -> tuple[ThreadPolicy, dict[str, str]]:
    """The policy for a process with environment `env`, and the variables to set. No side effects."""
    auto = {name for name in env.get(_AUTO, "").split(",") if name}
    user = {k: v for k, v in env.items() if k in (*_COUNT_VARS, "OMP_WAIT_POLICY") and k not in auto and v.strip()}
    budget = budget or cpu_budget()
    if local_ranks is None:
        local_ranks = _positive_int(env.get("LOCAL_WORLD_SIZE")) or 1
    local_ranks = max(1, local_ranks)
    note = ""
    user_threads = _positive_int(user.get("OMP_NUM_THREADS"))
    if "OMP_NUM_THREADS" in user and user_threads is None:
        note = f"OMP_NUM_THREADS={user['OMP_NUM_THREADS']!r} is not a positive number: ignored"
        del user["OMP_NUM_THREADS"]
    if requested is not None:
        threads, source = max(1, int(requested)), "recipe"
    elif user_threads is not None:
        threads, source = user_threads, "OMP_NUM_THREADS"
    else:
        threads, source = max(1, budget.cpus // local_ranks), budget.limit
    updates: dict[str, str] = {}
    for name in _COUNT_VARS:
        keep_user = name in user and not (name == "OMP_NUM_THREADS" and source == "recipe")
        if not keep_user:
            updates[name] = str(threads)
            auto.add(name)
    wait = user.get("OMP_WAIT_POLICY")
    if wait is None and threads == 1:
        # One thread has no OpenMP workers to wait for: nothing may spin on the only CPU.
        wait = updates["OMP_WAIT_POLICY"] = "PASSIVE"
        auto.add("OMP_WAIT_POLICY")
    elif wait is None:
        # Several threads keep OpenMP's own waiting (spin briefly, then sleep): passive waiting cost
        # 29-37% of a training step alone on a 2-core Zen 4 (docs/benchmarks.md, "Busy machine").
        # What spinning costs beside a busy process is avoided by following the load (LoadFollower).
        wait = DEFAULT_WAIT
        if "OMP_WAIT_POLICY" in auto:  # a parent's automatic PASSIVE (it had one CPU): not ours
            updates["OMP_WAIT_POLICY"] = None
            auto.discard("OMP_WAIT_POLICY")
    updates[_AUTO] = ",".join(sorted(auto))
    policy = ThreadPolicy(threads=threads, workers=threads, source=source, wait_policy=wait,
                          wait_policy_source="user" if "OMP_WAIT_POLICY" in user else "tuneforge",
                          budget=budget, local_ranks=local_ranks, note=note,
                          follows_load=source in ("affinity", "cgroup") and threads > 1)
    return policy, updates


def _update(env: MutableMapping[str, str], updates: Mapping[str, str | None]) -> None:
    for name, value in updates.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value


def apply(requested: int | None = None, local_ranks: int | None = None,
          env: MutableMapping[str, str] | None = None) -> ThreadPolicy:
    """Put the policy in force in this process: its environment (read by OpenMP/MKL when torch
    loads, and inherited by children) and, when torch is already loaded, torch's thread counts.
    `requested` is the recipe's speed.threads; `local_ranks` defaults to LOCAL_WORLD_SIZE."""
    env = os.environ if env is None else env
    policy, updates = plan(env, requested, local_ranks)
    torch = sys.modules.get("torch")
    late = torch is not None and env.get("OMP_WAIT_POLICY", DEFAULT_WAIT) != policy.wait_policy  # read at load
    _update(env, updates)
    if torch is None or not hasattr(torch, "set_num_threads"):
        return policy
    policy = replace(policy, wait_policy_in_force=not late)
    torch.set_num_threads(policy.threads)
    try:
        torch.set_num_interop_threads(policy.threads)
    except RuntimeError:  # only possible before torch's first parallel work; the intra-op count matters
        pass
    return replace(policy, torch_threads=torch.get_num_threads())


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment for a launched child (a detached or background run): the same policy,
    with tuneforge's own choices marked so the child recomputes them for its own CPUs."""
    _, updates = plan(env)
    out = dict(env)
    _update(out, updates)
    return out


def _busy_ticks(cpus: set[int], stat_path: str | Path) -> int | None:
    """Busy clock ticks (all but idle and iowait) of `cpus`, summed, from /proc/stat."""
    total = 0
    text = _read(Path(stat_path))
    if text is None:
        return None
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        ticks = [int(x) for x in rest.split()]
        total += sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)  # minus idle, iowait
    return total


class LoadFollower:
    """Sizes torch's intra-op threads to the CPUs other processes leave free, while work goes on.

    Why: OpenMP threads that wait for a thread whose CPU another process holds make every parallel
    region as slow as that thread (training fell to 0.10-0.26x beside one busy process on 2 cores);
    with one thread fewer there is nothing to wait for. Every `interval` seconds `check()` compares
    the busy time of this process's CPUs (/proc/stat) with this process's own CPU time: the rest is
    other processes' work, and the thread count becomes the CPUs left (at least 1, at most the budget).
    """

    def __init__(self, budget: int, cpus: set[int] | None = None, stat_path: str | Path = "/proc/stat",
                 interval: float = 2.0, clock=None, own_cpu=None):
        import time

        self.budget, self.interval, self.stat_path = max(1, budget), interval, stat_path
        self.cpus = cpus if cpus is not None else (os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set())
        self.clock, self.own_cpu = clock or time.monotonic, own_cpu or time.process_time
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.others = 0.0  # CPUs' worth of other processes' work in the last interval
        self._last = self._sample()

    def _sample(self):
        return self.clock(), _busy_ticks(self.cpus, self.stat_path), self.own_cpu()

    def check(self) -> int | None:
        """The thread count for now, once per interval (None in between, or without /proc/stat)."""
        now = self.clock()
        if now - self._last[0] < self.interval:
            return None
        sample = self._sample()
        (t0, busy0, own0), (t1, busy1, own1) = self._last, sample
        self._last = sample
        if busy0 is None or busy1 is None or t1 <= t0:
            return None
        self.others = max(0.0, ((busy1 - busy0) / self.hz - (own1 - own0)) / (t1 - t0))
        return max(1, min(self.budget, math.floor(self.budget - self.others + 0.5)))
