"""Checkpoints: everything a run needs to continue bit-for-bit, written atomically.

``checkpoints/step_N/`` holds ``model.safetensors`` (weights), ``optimizer.pt`` and
``scheduler.pt`` (state dicts, read back with ``torch.load(weights_only=True)``), ``rng_<rank>.pt``
(torch / CUDA / Python / NumPy generators of each rank) and ``state.json`` (step, data position,
world size). A checkpoint is built in a hidden temporary directory and renamed into place, so a
``step_N`` directory that exists is complete.
"""
from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from harness.distributed import Strategy

_STEP_DIR = re.compile(r"^step_(\d+)$")


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))


def _tuples(x: Any) -> Any:
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Checkpoint:
    path: Path
    step: int
    data: dict[str, Any]


def latest_checkpoint(checkpoints: Path) -> Checkpoint | None:
    """The highest-step complete checkpoint under ``checkpoints``, or None."""
    best = None
    if checkpoints.is_dir():
        for d in checkpoints.iterdir():
            m = _STEP_DIR.match(d.name)
            if m and (d / "state.json").is_file() and (best is None or int(m.group(1)) > best[0]):
                best = (int(m.group(1)), d)
    if best is None:
        return None
    state = json.loads((best[1] / "state.json").read_text())
    return Checkpoint(path=best[1], step=int(state["step"]), data=state.get("data", {}))


def save_checkpoint(checkpoints: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, data_state: dict[str, Any], strategy: Strategy, keep: int = 2) -> Path:
    """Write ``checkpoints/step_<step>`` (collective: every rank calls it); keep the newest ``keep``."""
    final = checkpoints / f"step_{step}"
    tmp = checkpoints / f".step_{step}.tmp"
    if strategy.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    strategy.barrier()
    torch.save(rng_state(), tmp / f"rng_{strategy.rank}.pt")
    strategy.barrier()
    if strategy.is_main:
        safetensors.torch.save_model(model, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        state = {"step": step, "data": data_state, "world_size": strategy.world_size}
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        _prune(checkpoints, keep)
    strategy.barrier()
    return final


def load_checkpoint(ckpt: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    strategy: Strategy) -> None:
    """Restore weights, optimizer, scheduler and this rank's RNG from ``ckpt``."""
    state = json.loads((ckpt.path / "state.json").read_text())
    if state.get("world_size", 1) != strategy.world_size:
        raise RuntimeError(f"{ckpt.path}: saved with world size {state['world_size']}, now "
                           f"{strategy.world_size}; resume with the same number of processes")
    missing, unexpected = safetensors.torch.load_model(model, str(ckpt.path / "model.safetensors"),
                                                       strict=False, device=str(next(model.parameters()).device))
    if missing or unexpected:
        raise RuntimeError(f"{ckpt.path / 'model.safetensors'}: does not match the model "
                           f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    optimizer.load_state_dict(torch.load(ckpt.path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(ckpt.path / "scheduler.pt", weights_only=True))
    set_rng_state(torch.load(ckpt.path / f"rng_{strategy.rank}.pt", weights_only=True))


def _prune(checkpoints: Path, keep: int) -> None:
    steps = sorted((int(m.group(1)), d) for d in checkpoints.iterdir() if (m := _STEP_DIR.match(d.name)))
    for _, d in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(d, ignore_errors=True)


def save_final(out: Path, model: nn.Module, tokenizer: Any = None, processor: Any = None) -> Path:
    """``save_pretrained`` model (safetensors) + tokenizer + processor into ``out``, atomically."""
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for extra in (tokenizer, processor):
        if extra is not None:
            extra.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
