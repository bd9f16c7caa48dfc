"""Training stages on several processes and nodes: each stage of a ``reproduce`` run becomes one
``torchrun`` job (``python -m torch.distributed.run ... -m reproduce.stage RUN_DIR STAGE_DIR``),
evaluation and reports stay in the calling process.

    reproduce table1 --paper vold --profile paper --nproc-per-node 8
    # two nodes, a shared file system holding --out; run on each node with its --node-rank:
    reproduce table1 --paper vold --profile paper --nproc-per-node 8 --nnodes 2 --node-rank R \
        --master-addr HOST0 --master-port 29500 --out /nfs/runs/vold-t1

Each rank runs the stage's trainer (``methods.registry``) with ``WORLD_SIZE`` set, so the
trainer's strategy (config ``distributed``; ``auto`` = DDP under torchrun) shards the work. On
several nodes every node trains every stage together (the same ``--out`` on a shared file system
decides which stages are already complete); node 0 alone records the run state, evaluates and
writes the reports, the others exit after the last stage. A stage's torchrun output goes to
``<out>/logs/<stage>.launch.log``.
"""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError

__all__ = ["Launch", "run_stage"]


@dataclass(frozen=True)
class Launch:
    """How training stages are launched (``nproc_per_node * nnodes == 1``: in-process)."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise ConfigError(f"--nproc-per-node and --nnodes must be >= 1 (got {self.nproc_per_node}, {self.nnodes})")
        if not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(f"--node-rank must be in [0, {self.nnodes}) (got {self.node_rank})")

    @property
    def distributed(self) -> bool:
        return self.nproc_per_node * self.nnodes > 1

    @property
    def is_main_node(self) -> bool:
        return self.node_rank == 0

    def command(self, out: Path, stage_dir: str) -> list[str]:
        """The torchrun command line of one stage."""
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={self.nproc_per_node}"]
        if self.nnodes == 1:
            cmd.append("--standalone")  # a free local port, no rendezvous settings
        else:
            cmd += [f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank}",
                    f"--master-addr={self.master_addr}", f"--master-port={self.master_port}"]
        return cmd + ["-m", "reproduce.stage", str(out), stage_dir]


def run_stage(launch: Launch, out: Path, stage_dir: str) -> Path:
    """Train one stage under torchrun; returns its final model directory (raises on failure)."""
    from harness.run_dir import RunDir

    log = Path(out) / "logs" / f"{stage_dir.replace('/', '__')}.launch.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        rc = subprocess.run(launch.command(Path(out), stage_dir), stdout=f, stderr=subprocess.STDOUT).returncode
    run = RunDir(Path(out) / stage_dir)
    if rc != 0 or not run.is_complete():
        raise RuntimeError(f"torchrun exited {rc} without completing the stage (log: {log})")
    return run.final
