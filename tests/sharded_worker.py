"""One rank of the sharded-strategy tests (tests/test_sharded_strategies.py), launched by
``python -m torch.distributed.run --standalone --nproc-per-node 2 tests/sharded_worker.py``.

Arguments: ``STRATEGY OUT PHASE`` with PHASE one of
- ``checks``: the gradient check (one accumulate_update with SGD(lr=1) on an even split of
  ``fixed_batch`` whose halves hold different token counts) and the shard counts (local
  parameter and AdamW-state elements after one step), written to ``OUT/checks_<rank>.pt``;
  then an SFT smoke run stopped after 2 of 3 steps in ``OUT/resumed``;
- ``resume``: a fresh launch finishing ``OUT/resumed``;
- ``whole``: the same SFT run without interruption in ``OUT/whole``.
A run shuts the process group down, so each phase is its own launch.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.distributed import make_strategy  # noqa: E402
from harness.optim import build_optimizer  # noqa: E402
from harness.update import accumulate_update, select_rows  # noqa: E402
from trainer_helpers import fixed_batch, forward_of, tiny_lm  # noqa: E402

SFT_RUN = {"steps": 3, "save_every": 2}


def local_numel(t: torch.Tensor) -> int:
    """Elements this rank holds of ``t`` (a DTensor's shard, a ZeRO-3 parameter's partition)."""
    if hasattr(t, "to_local"):
        return t.to_local().numel()
    if hasattr(t, "ds_tensor"):
        return t.ds_tensor.numel()
    return t.numel()


def optimizer_state_numel(strategy, optimizer: torch.optim.Optimizer) -> int:
    """Elements of AdamW's moments held by this rank (DeepSpeed: in its inner torch optimizer)."""
    engine = getattr(strategy, "engine", None)
    opt = engine.optimizer.optimizer if engine is not None else optimizer
    return sum(local_numel(v) for st in opt.state.values() for k, v in st.items()
               if k in ("exp_avg", "exp_avg_sq"))


def checks(name: str, out: Path) -> None:
    strategy = make_strategy(name, "cpu")  # type: ignore[arg-type]
    results: dict = {}
    for micro in (2, 4):
        model, opt = strategy.wrap(tiny_lm(), lambda m: torch.optim.SGD(m.parameters(), lr=1.0))
        before = {k: v.clone() for k, v in strategy.full_state_dict(model).items()}
        k = 8 // strategy.world_size
        batch = select_rows(fixed_batch(), torch.arange(strategy.rank * k, (strategy.rank + 1) * k))
        loss = accumulate_update(model, opt, strategy, batch, forward_of(model), _grpo_loss(),
                                 micro_batch_size=micro, max_grad_norm=None)["loss"]
        after = strategy.full_state_dict(model)
        if strategy.is_main:
            results[("delta", micro)] = ({n: before[n] - after[n] for n in before}, loss)
    model, opt = strategy.wrap(tiny_lm(), lambda m: build_optimizer(m, 1e-3, 0.0, (0.9, 0.999), 1e-8), 1.0)
    batch = select_rows(fixed_batch(), torch.arange(strategy.rank * 4, (strategy.rank + 1) * 4))
    accumulate_update(model, opt, strategy, batch, forward_of(model), _grpo_loss(), 4, 1.0)
    results["params"] = sum(local_numel(p) for p in model.parameters())
    results["optim"] = optimizer_state_numel(strategy, opt)
    results["total"] = sum(p.numel() for p in tiny_lm().parameters())
    torch.save(results, out / f"checks_{strategy.rank}.pt")
    sft(name, out / "resumed", stop_after=2)


def _grpo_loss():
    from methods.grpo.trainer import GRPO, GRPOConfig

    method = GRPO(GRPOConfig(model="unused", data="unused", loss_agg="token-mean", clip_high=0.3))
    return lambda fwd, mb, norm: method.loss(fwd, mb, norm, 0)


def sft(name: str, out: Path, stop_after: int | None = None) -> None:
    from methods.registry import load_method_config
    from methods.sft.config import PROFILES, SFTConfig
    from methods.sft.trainer import train

    cfg = load_method_config(SFTConfig, PROFILES, "smoke", overrides=SFT_RUN | {"distributed": name})
    train(cfg, out, stop_after=stop_after)


if __name__ == "__main__":
    torch.set_num_threads(1)
    name, out, phase = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    out.mkdir(parents=True, exist_ok=True)
    if phase == "checks":
        checks(name, out)
    else:
        sft(name, out / ("resumed" if phase == "resume" else "whole"))
