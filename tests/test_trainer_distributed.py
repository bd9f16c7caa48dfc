"""Data parallel and gradient accumulation do not change the update.

The GRPO loss of an optimizer mini-batch, and so its gradient, must be the same whether the
mini-batch is processed whole, in micro-batches of any size, or split over 2 processes (gloo) —
for every aggregation mode. The reference is computed independently: the loss over the whole
batch in one call with *local* denominators (no global normalisers), differentiated by autograd.
Plain SGD with lr 1 makes the weight change equal to minus the gradient (Adam would hide a scale
error: its first step is ~lr * sign(g)).
"""
from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from harness.distributed import Strategy, TorchDDP, make_strategy
from harness.update import accumulate_update, select_rows
from trainer_helpers import fixed_batch, forward_of, logp_of, tiny_lm

AGGS = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
MAX_LEN = 7  # the length budget of seq-mean-token-sum-norm (= fixed_batch's T)
SFT_RUN = {"steps": 3, "save_every": 2}


def grpo_loss(agg: str):
    from methods.grpo.trainer import GRPO, GRPOConfig

    method = GRPO(GRPOConfig(model="unused", data="unused", loss_agg=agg, clip_high=0.3))
    return lambda fwd, mb, norm: method.loss(fwd, mb, norm, 0)


def named_grpo_loss(agg: str):
    """The GRPO loss split into two named objectives (0.25 + 0.75 of it): with the default
    ``combine`` (the sum) the update must be exactly the one-objective update."""
    loss = grpo_loss(agg)

    def named(fwd, mb, norm):
        value, stats = loss(fwd, mb, norm)
        return {"quarter": 0.25 * value, "rest": 0.75 * value}, stats

    return named


def reference_grad(agg: str) -> dict[str, torch.Tensor]:
    """Gradient of the full-batch loss, one call, local counts = batch counts."""
    from harness import losses

    model, batch = tiny_lm(), fixed_batch()
    lp = logp_of(model, batch)
    loss, _ = losses.policy_loss(lp, batch.old_logp, batch.extras["advantages"], batch.response_mask,
                                 clip_low=0.2, clip_high=0.3, agg=agg, max_len=MAX_LEN)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def update_delta(agg: str, micro: int, strategy: Strategy, rows: torch.Tensor | None = None,
                 named: bool = False) -> tuple[dict, float]:
    """Weight change (= -grad) of one accumulate_update with SGD(lr=1), and the reported loss."""
    model, batch = tiny_lm(), fixed_batch()
    if rows is not None:
        batch = select_rows(batch, rows)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    out = accumulate_update(model, opt, strategy, batch, forward_of(model), (named_grpo_loss if named else grpo_loss)(agg),
                            micro_batch_size=micro, max_grad_norm=None, max_len=MAX_LEN)
    return {n: before[n] - p.detach() for n, p in model.named_parameters()}, out["loss"]


def assert_same(a: dict, b: dict, what: str) -> None:
    for n in a:
        assert torch.allclose(a[n], b[n], atol=1e-6, rtol=1e-5), f"{what}: {n} differs by {(a[n] - b[n]).abs().max()}"


@pytest.mark.parametrize("agg", AGGS)
def test_micro_batch_split_does_not_change_the_gradient(agg):
    ref = reference_grad(agg)
    losses_seen = []
    for micro in (8, 3, 1):  # whole, uneven pieces, one row at a time
        for named in (False, True):
            delta, loss = update_delta(agg, micro, Strategy("cpu"), named=named)
            assert_same(delta, ref, f"{agg}, micro-batch {micro}, named objectives {named}")
            losses_seen.append(loss)
    assert max(losses_seen) - min(losses_seen) < 1e-6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    strategy = TorchDDP("cpu")
    # Uneven split on purpose: rank 0 holds 3 rows (short and long responses), rank 1 holds 5,
    # so local token and sequence counts differ between ranks.
    rows = torch.arange(0, 3) if rank == 0 else torch.arange(3, 8)
    results = {}
    for agg in AGGS:
        for micro in (2, 8):
            results[(agg, micro)] = update_delta(agg, micro, strategy, rows)
        results[(agg, "named")] = update_delta(agg, 2, strategy, rows, named=True)
    t = torch.tensor([float(rank + 1)])
    strategy.all_reduce(t)
    results["all_reduce"] = t
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    # The whole SFT run scaffold on the same process group (one spawn: imports are slow on CI).
    from methods.registry import load_method_config
    from methods.sft.config import PROFILES, SFTConfig
    from methods.sft.trainer import train

    train(load_method_config(SFTConfig, PROFILES, "smoke", overrides=SFT_RUN | {"distributed": "ddp"}),
          os.path.join(out_dir, "sft"))  # shuts the process group down at the end


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp")
    mp.spawn(_dp_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out


def test_two_processes_equal_one_process_on_the_concatenated_batch(two_process_results):
    tmp_path = two_process_results
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert float(r0["all_reduce"]) == float(r1["all_reduce"]) == 3.0
    for agg in AGGS:
        single, single_loss = update_delta(agg, 8, Strategy("cpu"))
        assert_same(single, reference_grad(agg), f"{agg}, one process")
        for micro in (2, 8):
            for r in (r0, r1):
                delta, loss = r[(agg, micro)]
                assert_same(delta, single, f"{agg}, 2 processes, micro-batch {micro}")
                assert abs(loss - single_loss) < 1e-6, (agg, micro, loss, single_loss)
        for r in (r0, r1):  # named objectives: buffers all-reduced, then combined
            delta, loss = r[(agg, "named")]
            assert_same(delta, single, f"{agg}, 2 processes, named objectives")
            assert abs(loss - single_loss) < 1e-6


def test_local_normalisation_would_have_been_caught():
    """Sanity of the test itself: a loss normalised by the micro-batch's own token count
    (the bug) gives a different gradient when accumulated, so the checks above can fail."""
    from harness import losses

    def local_loss(fwd, mb, norm):
        return losses.policy_loss(fwd["full"].logp, mb.old_logp, mb.extras["advantages"], mb.response_mask,
                                  clip_low=0.2, clip_high=0.3, agg="token-mean")

    model, batch = tiny_lm(), fixed_batch()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    accumulate_update(model, torch.optim.SGD(model.parameters(), lr=1.0), Strategy("cpu"), batch,
                      forward_of(model), local_loss, micro_batch_size=1, max_grad_norm=None)
    delta = {n: before[n] - p.detach() for n, p in model.named_parameters()}
    ref = reference_grad("token-mean")
    assert any(not torch.allclose(delta[n], ref[n], atol=1e-6) for n in ref)


def test_strategy_names_fail_clearly(monkeypatch):
    """An unknown name, and DeepSpeed missing, are one-line errors before any process group."""
    import sys

    with pytest.raises(ValueError, match="expected one of"):
        make_strategy("horovod", "cpu")  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "deepspeed", None)
    for name in ("zero2", "zero3"):
        with pytest.raises(ImportError, match="needs DeepSpeed: DS_BUILD_OPS=0 pip install"):
            make_strategy(name, "cpu")  # type: ignore[arg-type]
    assert make_strategy("auto", "cpu").world_size == int(os.environ.get("WORLD_SIZE", "1"))


def test_sft_run_on_two_processes_matches_one_process(two_process_results, tmp_path):
    """The whole run scaffold under torch.distributed (gloo): sharded data, reduced gradients,
    checkpoints by rank 0 with one RNG file per rank, final model — same weights as 1 process."""
    import safetensors.torch
    from methods.registry import load_method_config
    from methods.sft.config import PROFILES, SFTConfig
    from methods.sft.trainer import train

    one = train(load_method_config(SFTConfig, PROFILES, "smoke", overrides=SFT_RUN), tmp_path / "one")
    two = two_process_results / "sft"
    assert (two / "COMPLETE").is_file()
    assert sorted(p.name for p in (two / "checkpoints" / "step_2").glob("rng_*.pt")) == ["rng_0.pt", "rng_1.pt"]
    wa = safetensors.torch.load_file(str(one / "model.safetensors"))
    wb = safetensors.torch.load_file(str(two / "final" / "model.safetensors"))
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst < 1e-5, worst
    la = [json.loads(x)["loss"] for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert np.allclose(la, lb, atol=1e-5), (la, lb)


# ------------------------------------------------------------------ frozen models, synced generate


def test_unsharded_strategies_keep_a_frozen_model_whole_on_their_device():
    """``Strategy.shard_frozen`` (single / ddp / zero2): the same module, every parameter frozen,
    in eval mode; ``generate`` needs no rank sync for it (harness.rollout.hf.synced_gpus)."""
    from harness.models import is_sharded
    from harness.rollout.hf import synced_gpus

    model = tiny_lm().train()
    frozen = Strategy("cpu").shard_frozen(model)
    assert frozen is model and not frozen.training
    assert not any(p.requires_grad for p in frozen.parameters())
    assert not is_sharded(frozen) and not synced_gpus(frozen)


@pytest.mark.parametrize("shard", [True, False])
def test_load_frozen_places_the_model_as_shard_frozen_says(shard, monkeypatch):
    """harness.trainer.load_frozen: the strategy's ``shard_frozen`` when ``cfg.shard_frozen``,
    else the replicated placement of the base ``Strategy``."""
    from types import SimpleNamespace

    import harness.trainer as tr

    class Recording(Strategy):
        def shard_frozen(self, model):
            model.sharded_here = True
            return super().shard_frozen(model)

    monkeypatch.setattr(tr, "load_model", lambda *a, **k: SimpleNamespace(model=tiny_lm()))
    ctx = SimpleNamespace(strategy=Recording("cpu"), cfg=SimpleNamespace(shard_frozen=shard), policy=None)
    ref = tr.load_frozen(ctx, "unused", "float32", teacher=False)
    assert getattr(ref.model, "sharded_here", False) is shard
    assert not any(p.requires_grad for p in ref.model.parameters())


@pytest.mark.parametrize("strategy", ["fsdp", "zero3"])
def test_rank_dependent_generate_calls_are_refused_on_a_sharded_policy(strategy):
    """Multi-turn tool rollouts and DAPO's dynamic sampling make a rank-dependent number of
    ``generate`` calls: under fsdp / zero3 with the HF engine they would hang, so the config says so."""
    from methods.grpo.config import GRPOConfig
    from methods.ptdpo.config import PTDPOConfig

    with pytest.raises(ValueError, match=f"tools .* cannot run under distributed={strategy}"):
        GRPOConfig(model="m", data="d", tools=("calculate",), distributed=strategy)
    with pytest.raises(ValueError, match=f"dynamic_sampling .* cannot run under distributed={strategy}"):
        PTDPOConfig(model="m", data="d", dynamic_sampling=True, distributed=strategy)
    GRPOConfig(model="m", data="d", tools=("calculate",), distributed="zero2")
    PTDPOConfig(model="m", data="d", dynamic_sampling=True, distributed=strategy, rollout_engine="vllm")
