"""The recipe's `distributed:` block: how many processes train the run and how they share the model.

Part of the recipe schema (runner/recipe.py embeds it); runner/distributed.py turns it into an
accelerate config and a launch command. Light: pydantic only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

STRATEGY_HELP = {
    "ddp": "every process holds the whole model and a slice of each batch (the model must fit one GPU)",
    "fsdp": "PyTorch FSDP: parameters, gradients and optimizer state sharded across processes",
    "zero2": "DeepSpeed ZeRO-2: gradients and optimizer state sharded (needs the deepspeed extra)",
    "zero3": "DeepSpeed ZeRO-3: parameters too (needs the deepspeed extra)",
}


class DistributedSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    nproc: int = Field(1, ge=1, le=1024, description="Processes per node, one per GPU (CPU: gloo processes). More than 1 "
                       "launches the run through `accelerate launch`; `tuneforge train --nproc N` sets it.")
    nnodes: int = Field(1, ge=1, le=1024, description="Machines taking part; run the same command on each with its --node-rank.")
    node_rank: int = Field(0, ge=0, description="This machine's index, 0..nnodes-1; node 0 hosts the rendezvous and writes the run files.")
    master_addr: str = Field("127.0.0.1", description="Address of node 0, reachable from every node.")
    master_port: int = Field(29500, ge=1, le=65535, description="A free TCP port on node 0 for the rendezvous.")
    strategy: Literal["ddp", "fsdp", "zero2", "zero3"] = Field(
        "ddp", description="How processes share the model: " + "; ".join(f"'{k}' {v}" for k, v in STRATEGY_HELP.items()) + ".")
    offload: bool = Field(False, description="fsdp/zero2/zero3: keep optimizer state (and, for fsdp/zero3, parameters) in "
                          "CPU memory: less GPU memory, slower steps.")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="accelerate's mixed precision; 'auto' follows the recipe's precision.")

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes


def distributed_problems(recipe) -> list[str]:
    """Combinations that cannot work, each with the fix."""
    d: DistributedSpec = recipe.distributed
    out = []
    if d.node_rank >= d.nnodes:
        out.append(f"distributed.node_rank {d.node_rank} is not below distributed.nnodes {d.nnodes} — fix: node ranks are 0..{d.nnodes - 1}")
    if d.nnodes > 1 and not recipe.name:
        out.append("a multi-node run needs a fixed run name, so every node uses the same run directory — fix: set name: my-run")
    if d.offload and d.strategy == "ddp":
        out.append("distributed.offload needs a sharded strategy — fix: strategy: fsdp, zero2 or zero3, or offload: false")
    if d.strategy != "ddp" and recipe.device == "cpu":
        out.append(f"strategy '{d.strategy}' needs GPUs; on CPU the processes can only run ddp (gloo) — fix: strategy: ddp")
    if d.strategy in ("zero2", "zero3") and recipe.method == "qlora":
        out.append(f"strategy '{d.strategy}' does not shard a 4-bit base — fix: strategy: fsdp (QLoRA + FSDP) or ddp")
    return out
