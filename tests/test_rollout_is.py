"""Rollout importance sampling (issue 15): the weights w = exp(logp_old_trainer - logp_engine),
truncated or masked at a cap (harness.losses.rollout_is_weights), their effect on the surrogate
(``policy_loss(token_weights=)``), every method's surrogate taking them, and the online loop's
metrics and config checks."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.losses import policy_loss, rollout_is_weights, weight_tokens

ROOT = Path(__file__).resolve().parents[1]


def _batch(seed: int, B: int = 3, T: int = 6, spread: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    rollout = -torch.rand(B, T, generator=g) * 3
    old = rollout + spread * torch.randn(B, T, generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    return old, rollout, mask, g


# ------------------------------------------------------------------ the weights


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), cap=st.floats(0.1, 10.0), spread=st.floats(0.0, 5.0))
def test_truncate_caps_and_is_exact_below_the_cap(seed, cap, spread):
    old, rollout, mask, _ = _batch(seed, spread=spread)
    w, stats = rollout_is_weights(old, rollout, mask, "token_truncate", cap)
    raw = torch.exp(old - rollout)
    valid = mask != 0
    assert w.dtype == torch.float32 and not w.requires_grad
    assert bool((w[valid] <= cap).all())
    below = valid & (raw <= cap)
    assert torch.equal(w[below], raw[below])
    assert bool((w[valid & (raw > cap)] == cap).all())
    assert bool((w[~valid] == 0).all())
    n = valid.sum()
    assert float(stats["capped_frac"]) == pytest.approx(float(((raw > cap) & valid).sum() / n))
    assert float(stats["weight_mean"]) == pytest.approx(float(w[valid].mean()), rel=1e-6)
    assert float(stats["logp_abs_diff"]) == pytest.approx(float((old - rollout).abs()[valid].mean()), rel=1e-5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), cap=st.floats(0.1, 10.0))
def test_mask_zeroes_exactly_the_tokens_above_the_cap(seed, cap):
    old, rollout, mask, _ = _batch(seed)
    w, stats = rollout_is_weights(old, rollout, mask, "token_mask", cap)
    raw = torch.exp(old - rollout)
    valid = mask != 0
    keep = valid & (raw <= cap)
    assert torch.equal(w[keep], raw[keep])
    assert bool((w[~keep] == 0).all())           # above the cap, and padding
    assert float(stats["capped_frac"]) == pytest.approx(float(((raw > cap) & valid).sum() / valid.sum()))


@pytest.mark.parametrize("mode", ["none", "token_truncate", "token_mask"])
def test_identical_log_probs_give_exactly_one_and_padding_zero(mode):
    _, rollout, mask, _ = _batch(3)
    rollout = torch.where(mask != 0, rollout, torch.full_like(rollout, float("nan")))  # garbage on padding
    w, stats = rollout_is_weights(rollout, rollout, mask, mode, 2.0)
    assert torch.equal(w, mask)
    assert float(stats["logp_abs_diff"]) == 0.0 and float(stats["weight_mean"]) == 1.0


def test_huge_log_ratios_stay_finite_and_bad_arguments_fail():
    old, rollout, mask = torch.tensor([[500.0, -500.0]]), torch.zeros(1, 2), torch.ones(1, 2)
    w, _ = rollout_is_weights(old, rollout, mask, "token_truncate", 2.0)
    assert torch.isfinite(w).all() and w[0, 0] == 2.0 and w[0, 1] == pytest.approx(math.exp(-20.0))
    with pytest.raises(ValueError, match="cap"):
        rollout_is_weights(old, rollout, mask, "token_truncate", 0.0)
    with pytest.raises(ValueError, match="mode"):
        rollout_is_weights(old, rollout, mask, "sequence_truncate", 2.0)
    with pytest.raises(ValueError, match="token_weights"):
        weight_tokens(torch.zeros(2, 3), torch.ones(3, 2))


# ------------------------------------------------------------------ the surrogate


def _pg_inputs(seed: int):
    old, _, mask, g = _batch(seed, spread=0.3)
    logp = (old + 0.3 * torch.randn(old.shape, generator=g)).requires_grad_(True)
    adv = torch.randn(old.shape[0], generator=g)
    return logp, old, adv, mask, g


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), agg=st.sampled_from(["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]),
       dual=st.booleans())
def test_policy_loss_token_weights(seed, agg, dual):
    logp, old, adv, mask, g = _pg_inputs(seed)
    kw = dict(agg=agg, clip_ratio_c=3.0 if dual else None)
    base, base_stats = policy_loss(logp, old, adv, mask, **kw)
    ones, ones_stats = policy_loss(logp, old, adv, mask, token_weights=torch.ones_like(old), **kw)
    assert torch.equal(base, ones)                              # all ones: exactly the unweighted loss
    assert all(torch.equal(base_stats[k], ones_stats[k]) for k in base_stats)
    w1, w2 = torch.rand(old.shape, generator=g) * 3, torch.rand(old.shape, generator=g) * 3
    a, b = 0.7, -1.3
    l1, l2 = (policy_loss(logp, old, adv, mask, token_weights=w, **kw)[0] for w in (w1, w2))
    lab = policy_loss(logp, old, adv, mask, token_weights=a * w1 + b * w2, **kw)[0]
    assert float(lab.detach()) == pytest.approx(float((a * l1 + b * l2).detach()), abs=1e-5)   # linear in the weights
    # per token, the gradient scales by w (the surrogate of token t depends on logp_t only)
    (g0,) = torch.autograd.grad(base, logp)
    (gw,) = torch.autograd.grad(l1, logp)
    assert torch.allclose(gw, w1 * g0, atol=1e-6)
    # the weights are data: no gradient reaches them
    wg = w1.clone().requires_grad_(True)
    policy_loss(logp, old, adv, mask, token_weights=wg, **kw)[0].backward()
    assert wg.grad is None


def test_method_surrogates_weight_the_surrogate_and_not_the_kl_terms():
    """Each method's loss with w = 2 everywhere: the weighted part doubles, the rest does not."""
    from methods.opd.loss import k1_reward_loss, rkl_sampled_loss
    from methods.ptdpo.loss import ptdpo_loss
    from methods.reopold.loss import reopold_loss
    from methods.vold.loss import vold_loss

    logp, old, adv, mask, g = _pg_inputs(5)
    logp = logp.detach()  # values only
    teacher = old - torch.rand(old.shape, generator=g)
    two = 2 * torch.ones_like(old)
    surrogate_only = {
        "k1-reward": lambda w: k1_reward_loss(logp, old, teacher, mask, token_weights=w)[0],
        "rkl-sampled": lambda w: rkl_sampled_loss(logp, old, teacher, mask, token_weights=w)[0],
        "vold beta 0": lambda w: vold_loss(logp, old, adv, torch.zeros(3), mask, beta=0.0, token_weights=w)[0],
        "ptdpo": lambda w: ptdpo_loss(logp, old, adv, mask, lambda_ptd=0.0, token_weights=w)[0],
    }
    for clip, sg in ((True, True), (False, True), (False, False)):
        surrogate_only[f"reopold ppo_clip={clip} stop_grad={sg}"] = (
            lambda w, clip=clip, sg=sg: reopold_loss(logp, old, teacher, mask, ppo_clip=clip, stop_grad=sg,
                                                     reward_clip=False, token_weights=w)[0])
    for name, fn in surrogate_only.items():
        assert float(fn(two)) == pytest.approx(2 * float(fn(None)), rel=1e-6), name
    # VOLD's distillation term and PTD-PO's reference KL are not weighted
    with_kl = {
        "vold": (lambda w: vold_loss(logp, old, adv, torch.zeros(3), mask, beta=0.5, teacher_logp=teacher,
                                     token_weights=w)[0], lambda: vold_loss(logp, old, adv, torch.zeros(3), mask,
                                                                            beta=0.0)[0]),
        "ptdpo": (lambda w: ptdpo_loss(logp, old, adv, mask, lambda_ptd=0.0, ref_logp=teacher, kl_coef=0.1,
                                       token_weights=w)[0], lambda: ptdpo_loss(logp, old, adv, mask, lambda_ptd=0.0)[0]),
    }
    for name, (fn, surrogate) in with_kl.items():
        assert float(fn(two) - fn(None)) == pytest.approx(float(surrogate()), rel=1e-5, abs=1e-7), name


SURROGATE_CALLS = {"policy_loss", "vold_loss", "ptdpo_loss", "reopold_loss", "k1_reward_loss", "rkl_sampled_loss",
                   "_unclipped"}
REGISTERED_SURROGATES = {"policy_loss", "opd/k1-reward", "opd/rkl-sampled", "reopold/loss"}


def _surrogate_calls(tree: ast.AST) -> list[ast.Call]:
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = getattr(f, "attr", getattr(f, "id", None))
        if name in SURROGATE_CALLS:
            out.append(node)
        elif (isinstance(f, ast.Call) and getattr(f.func, "attr", getattr(f.func, "id", None)) == "get_loss"
              and f.args and isinstance(f.args[0], ast.Constant) and f.args[0].value in REGISTERED_SURROGATES):
            out.append(node)
    return out


def test_every_method_passes_the_weights_to_its_surrogate():
    """Every call of a sampled-token surrogate under methods/ passes ``token_weights`` (a method
    that forgets it would silently ignore ``rollout_is``)."""
    missing, seen = [], 0
    for path in sorted((ROOT / "methods").rglob("*.py")):
        for call in _surrogate_calls(ast.parse(path.read_text(encoding="utf-8"))):
            seen += 1
            if not any(k.arg == "token_weights" for k in call.keywords):
                missing.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert seen >= 10 and missing == []
    # the trainers take them from the batch through the one helper
    for method in ("grpo", "vold", "opd", "reopold", "ptdpo", "vgs"):
        assert "rollout_is_weight(mb)" in (ROOT / "methods" / method / "trainer.py").read_text(), method


# ------------------------------------------------------------------ the online loop


class OffsetEngine:
    """The HF engine with its log-probs lowered by ``offsets[t % len(offsets)]`` at position t (a
    rollout engine whose numerics differ from the trainer's by a known amount); records the
    weight mean, capped share and mean |difference| the loop should log (cap ``cap``)."""

    def __init__(self, inner, offsets: tuple[float, ...], cap: float):
        self.inner, self.offsets, self.cap = inner, offsets, cap
        self.expected: list[tuple[float, float, float]] = []

    def sync_weights(self, model) -> None:
        self.inner.sync_weights(model)

    def generate(self, samples, sampling):
        traj = self.inner.generate(samples, sampling)
        T = traj.old_logp.shape[1]
        delta = torch.tensor([self.offsets[t % len(self.offsets)] for t in range(T)])[None].expand_as(traj.old_logp)
        valid = traj.response_mask != 0
        raw = torch.exp(delta[valid])
        self.expected.append((float(raw.clamp(max=self.cap).mean()), float((raw > self.cap).float().mean()),
                              float(delta[valid].mean())))
        traj.old_logp = (traj.old_logp - delta) * traj.response_mask
        return traj


def _offset_engine(offsets, cap, box):
    from harness.rollout.hf import HFRolloutEngine

    def make(ctx):
        box.append(OffsetEngine(HFRolloutEngine(ctx.policy, batch_size=ctx.cfg.rollout_batch_size, progress=False),
                                offsets, cap))
        return box[-1]

    return make


def test_truncated_is_in_a_grpo_run(tmp_path):
    """Engine log-probs = the true ones minus 0, 0.5, 1 by position: recomputed (``auto``), the
    weights are exp(offset) truncated at 2, and the logged mean and truncated share are those;
    the update differs from the same run without the correction."""
    from methods.grpo.trainer import train
    from tests.test_trainer_runs import grpo_cfg, metrics, weights

    offsets, cap = (0.0, 0.5, 1.0), 2.0
    runs = {}
    for mode in ("token_truncate", "none"):
        box: list = []
        out = tmp_path / mode
        train(grpo_cfg(steps=2, rollout_is=mode, rollout_is_cap=cap), out, make_engine=_offset_engine(offsets, cap, box))
        runs[mode] = (metrics(out), weights(out / "final"), box[0].expected)
    m, _, expected = runs["token_truncate"]
    for row, (w_mean, capped, diff) in zip(m, expected):
        assert row["old_logp_recomputed"] == 1.0
        assert row["rollout_is_weight_mean"] == pytest.approx(w_mean, rel=1e-4)
        assert row["rollout_is_truncated_frac"] == pytest.approx(capped, abs=1e-9)
        assert 0 < capped < 1 and 1 < w_mean < cap
        assert row["rollout_logp_abs_diff"] == pytest.approx(diff, rel=1e-4)
    m_none, _, expected_none = runs["none"]
    for row, (_, _, diff) in zip(m_none, expected_none):
        assert "rollout_is_weight_mean" not in row and row["rollout_logp_abs_diff"] == pytest.approx(diff, rel=1e-4)
    w_is, w_none = runs["token_truncate"][1], runs["none"][1]
    assert max(float((w_is[k] - w_none[k]).abs().max()) for k in w_is) > 1e-4


def test_unperturbed_engine_gives_weights_of_one(tmp_path):
    """The HF engine on the policy itself, recomputed (``always``): trainer and engine differ only
    by the engine's fp32 rounding, so every weight is 1 within 1e-5."""
    from methods.grpo.trainer import GRPO, train
    from harness.trainer import rollout_is_weight
    from tests.test_trainer_runs import grpo_cfg, metrics

    seen: list[torch.Tensor] = []

    class Capture(GRPO):
        def prepare(self, traj, ctx, step):
            w = rollout_is_weight(traj)
            assert w is not None
            seen.append(w[traj.response_mask != 0])
            return super().prepare(traj, ctx, step)

    cfg = grpo_cfg(steps=2, rollout_is="token_mask", recompute_old_logp="always")
    train(cfg, tmp_path / "run", method=Capture(cfg))
    assert len(seen) == 2 and all(w.numel() > 0 and float((w - 1).abs().max()) < 1e-5 for w in seen)
    for row in metrics(tmp_path / "run"):
        assert row["rollout_is_masked_frac"] == 0.0 and row["rollout_logp_abs_diff"] < 1e-5


def test_rollout_is_config_is_checked():
    from tests.test_trainer_runs import grpo_cfg

    assert grpo_cfg().rollout_is == "none" and grpo_cfg().rollout_is_cap == 2.0
    for never in ("never", False):
        with pytest.raises(ValueError, match="rollout_is=token_truncate needs the trainer's old log-probs"):
            grpo_cfg(rollout_is="token_truncate", recompute_old_logp=never)
    with pytest.raises(ValueError, match="rollout_is_cap must be > 0"):
        grpo_cfg(rollout_is="token_mask", rollout_is_cap=0.0)
    with pytest.raises(ValueError, match="rollout_is"):
        grpo_cfg(rollout_is="sequence_mask")
    assert grpo_cfg(rollout_is="token_mask", recompute_old_logp="auto").rollout_is == "token_mask"
