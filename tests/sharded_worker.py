"""One rank of the sharded-strategy tests (tests/test_sharded_strategies.py), launched by
``python -m torch.distributed.run --standalone --nproc-per-node 2 tests/sharded_worker.py``.

Arguments: ``STRATEGY OUT PHASE`` with PHASE one of
- ``checks``: the gradient check (one accumulate_update with SGD(lr=1) on an even split of
  ``fixed_batch`` whose halves hold different token counts), the shard counts (local
  parameter and AdamW-state elements after one step), a frozen model sharded by
  ``Strategy.shard_frozen`` (its log-probs on ``fixed_batch``, top level and through the
  backbone + ``lm_head`` as the scorers call it, its gathered head and its local elements) and
  an OPD smoke run of ``OPD_RUN`` steps in ``OUT/opd`` whose rank 0 ends every response after
  ``EOS_AFTER`` tokens (so the ranks run different numbers of decode steps), with its teacher's
  local elements and each rank's response lengths; all written to ``OUT/checks_<rank>.pt``;
  then an SFT smoke run stopped after 2 of 3 steps in ``OUT/resumed``;
- ``resume``: a fresh launch finishing ``OUT/resumed``;
- ``whole``: the same SFT run without interruption in ``OUT/whole``.
A run shuts the process group down at its end (the OPD run's is skipped, so the SFT run can
follow in the same launch), so each phase is its own launch.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.distributed import Strategy, make_strategy  # noqa: E402
from harness.models import full_shape, full_weight  # noqa: E402
from harness.optim import build_optimizer  # noqa: E402
from harness.update import accumulate_update, select_rows  # noqa: E402
from trainer_helpers import (fixed_batch, forward_of, logp_of, model_inputs, response_logp,  # noqa: E402
                             response_positions, tiny_lm)

SFT_RUN = {"steps": 3, "save_every": 2}
OPD_RUN = {"steps": 2, "save_every": 2, "prompts_per_step": 4, "num_generations": 2, "max_new_tokens": 6,
           "rollout_batch_size": 2, "micro_batch_size": 4, "temperature": 1.0}
EOS_AFTER = 2  # rank 0's responses end here; rank 1's run on (up to max_new_tokens)
FROZEN_SEED = 1


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
    model, opt = strategy.wrap(tiny_lm(), lambda m: torch.optim.SGD(m.parameters(), lr=1.0))
    before = {k: v.clone() for k, v in strategy.full_state_dict(model).items()}
    batch = select_rows(kl_batch(), torch.arange(strategy.rank * 4, (strategy.rank + 1) * 4))
    loss = accumulate_update(model, opt, strategy, batch, view_forward_of(model), full_kl_loss, micro_batch_size=2,
                             max_grad_norm=None)["loss"]
    after = strategy.full_state_dict(model)
    if strategy.is_main:
        results["kl_delta"] = ({n: before[n] - after[n] for n in before}, loss)
    model, opt = strategy.wrap(tiny_lm(), lambda m: build_optimizer(m, 1e-3, 0.0, (0.9, 0.999), 1e-8), 1.0)
    batch = select_rows(fixed_batch(), torch.arange(strategy.rank * 4, (strategy.rank + 1) * 4))
    accumulate_update(model, opt, strategy, batch, forward_of(model), _grpo_loss(), 4, 1.0)
    results["params"] = sum(local_numel(p) for p in model.parameters())
    results["optim"] = optimizer_state_numel(strategy, opt)
    results["total"] = sum(p.numel() for p in tiny_lm().parameters())
    results.update(frozen_checks(strategy))
    results.update(opd(name, out / "opd", strategy.rank))
    torch.save(results, out / f"checks_{strategy.rank}.pt")
    sft(name, out / "resumed", stop_after=2)


def frozen_numel(model: torch.nn.Module) -> tuple[int, int]:
    """(elements this rank holds, elements in all) of ``model``'s parameters."""
    params = list(model.parameters())
    return sum(local_numel(p) for p in params), sum(full_shape(p).numel() for p in params)


def frozen_checks(strategy: Strategy) -> dict:
    """``tiny_lm(FROZEN_SEED)`` through ``strategy.shard_frozen``: its log-probs on ``fixed_batch``
    (the top-level forward and, as harness.scoring calls it, the backbone then ``lm_head``), its
    gathered ``lm_head`` weight, whether any parameter still wants a gradient, and its element counts."""
    frozen = strategy.shard_frozen(tiny_lm(FROZEN_SEED))
    batch = fixed_batch()
    with torch.no_grad():
        top = logp_of(frozen, batch)
        hidden = frozen.model(**model_inputs(batch)).last_hidden_state
        logits = frozen.lm_head(hidden).float()
    local, total = frozen_numel(frozen)
    return {"frozen_logp": top, "frozen_logits": logits, "frozen_head": full_weight(frozen.lm_head.weight),
            "frozen_grad": any(p.requires_grad for p in frozen.parameters()), "frozen_params": local,
            "frozen_total": total}


class _EndAt:
    """A logits processor (after the engine's own) that forces EOS once a row holds ``n - 1`` new
    tokens, so every row ends at ``n`` (the prompt width is the input's at the first call)."""

    def __init__(self, eos: int, n: int):
        self.eos, self.n, self.start = eos, n, None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.start = input_ids.shape[1] if self.start is None else self.start
        if input_ids.shape[1] - self.start >= self.n - 1:
            scores[:] = float("-inf")
            scores[:, self.eos] = 0.0
        return scores


def opd(name: str, out: Path, rank: int) -> dict:
    """The OPD smoke run (``OPD_RUN``) under ``name``, its teacher through ``load_frozen`` (sharded
    under fsdp / zero3), rank 0's responses cut at ``EOS_AFTER`` tokens: each rank's decode steps
    per generate call and the teacher's element counts. The run's process group stays up."""
    import harness.distributed as hd
    from harness.trainer import default_engine
    from methods.opd.config import PROFILES, OPDConfig
    from methods.opd.trainer import OPD, train
    from methods.registry import load_method_config

    cfg = load_method_config(OPDConfig, PROFILES, "smoke", overrides=OPD_RUN | {"distributed": name})
    steps: list[int] = []

    def engine(ctx):
        eng = default_engine(ctx)
        base_config, base_rows = eng._generation_config, eng._generate_rows

        def gen_config(sampling):
            config, processors, recorder = base_config(sampling)
            if rank == 0:
                processors.append(_EndAt(eng.bundle.eos_token_ids[0], EOS_AFTER))
            return config, processors, recorder

        def rows(*args, **kw):
            resp, logp = base_rows(*args, **kw)
            steps.append(int(resp.shape[1]))
            return resp, logp

        eng._generation_config, eng._generate_rows = gen_config, rows
        return eng

    method = OPD(cfg)
    shutdown, hd.TorchDDP.shutdown = hd.TorchDDP.shutdown, lambda self: None  # keep the group for the SFT run
    try:
        train(cfg, out, method=method, make_engine=engine)
    finally:
        hd.TorchDDP.shutdown = shutdown
    local, total = frozen_numel(method.teacher.model)
    return {"opd_steps": steps, "teacher_params": local, "teacher_total": total}


def kl_batch():
    """``fixed_batch`` with fixed random teacher logits per row (``extras["teacher_logits"]``)."""
    from trainer_helpers import VOCAB

    batch = fixed_batch()
    g = torch.Generator().manual_seed(7)
    batch.extras["teacher_logits"] = 3 * torch.randn(*batch.response_ids.shape, VOCAB, generator=g)
    return batch


def view_forward_of(model: torch.nn.Module):
    """An update forward giving a full ``harness.forward.ViewOutput`` (hidden states, lm_head weight
    and module), the backbone and lm_head called as harness.scoring calls them."""
    from harness.forward import ViewOutput

    def forward(mb):
        hidden = model.model(**model_inputs(mb)).last_hidden_state[:, response_positions(mb)]
        logp = response_logp(model.lm_head(hidden), mb)
        return {"full": ViewOutput(logp=logp, hidden=hidden, weight=model.lm_head.weight, mask=mb.response_mask,
                                   lm_head=model.lm_head)}

    return forward


def full_kl_loss(fwd, mb, norm):
    """The student's fused full-vocabulary reverse KL to the fixed teacher logits, token-mean over
    the global batch: the loss reads the lm_head weight itself (``ViewOutput.through_head``)."""
    from harness import losses

    w = mb.response_mask.float() / norm.global_tokens
    fused = fwd["full"].through_head(lambda head: losses.full_kl(head, mb.extras["teacher_logits"], mb.response_mask,
                                                                 "reverse", token_weights=w))
    return fused.loss, {}


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
