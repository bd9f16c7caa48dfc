"""Property tests of VOLD's objective (methods/vold/loss.py; VOLD Eqs. 2, 3, 5, 6; docs/methods/vold.md §7)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import losses
from harness.routing import failure_weights
from methods.vold.loss import distillation_term, sampled_kl, vold_loss

SETTINGS = settings(max_examples=40, deadline=None)


def batch(seed: int, rewards: str = "mixed", B: int = 6, T: int = 7):
    """Random (logp leaf, old_logp, teacher_logp, advantages, rewards, mask, group ids)."""
    g = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(B, T, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    teacher = logp.detach() + torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    if rewards == "zeros":
        r = torch.zeros(B, dtype=torch.float64)
    elif rewards == "ones":
        r = torch.ones(B, dtype=torch.float64)
    else:
        r = torch.randint(0, 2, (B,), generator=g).double()
    groups = torch.arange(B) // 3
    adv = losses.group_advantages(r, groups)
    return logp, old, teacher, adv, r, mask


def loss_and_grad(logp, **kw):
    if logp.grad is not None:
        logp.grad = None
    loss, _ = vold_loss(logp, **kw)
    (grad,) = torch.autograd.grad(loss, logp)
    return loss.detach(), grad


def kw_of(old, teacher, adv, r, mask, **extra):
    return dict(old_logp=old, advantages=adv, rewards=r, mask=mask, teacher_logp=teacher, **extra)


@SETTINGS
@given(seed=st.integers(0, 10_000), masked=st.booleans(),
       agg=st.sampled_from(["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]))
def test_beta_zero_is_grpo_exactly(seed, masked, agg):
    logp, old, teacher, adv, r, mask = batch(seed)
    v, g = loss_and_grad(logp, **kw_of(old, teacher, adv, r, mask, beta=0.0, masked=masked, agg=agg))
    pg, _ = losses.policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.3, agg=agg)
    (g_pg,) = torch.autograd.grad(pg, logp)
    assert torch.equal(v, pg.detach())
    assert torch.equal(g, g_pg)


@SETTINGS
@given(seed=st.integers(0, 10_000), beta=st.floats(0.001, 5.0))
def test_loss_is_affine_in_beta(seed, beta):
    logp, old, teacher, adv, r, mask = batch(seed)
    base = kw_of(old, teacher, adv, r, mask)
    v0, g0 = loss_and_grad(logp, **base, beta=0.0)
    v1, g1 = loss_and_grad(logp, **base, beta=1.0)
    vb, gb = loss_and_grad(logp, **base, beta=beta)
    assert torch.allclose(vb - v0, beta * (v1 - v0), rtol=1e-10, atol=1e-12)
    assert torch.allclose(gb - g0, beta * (g1 - g0), rtol=1e-10, atol=1e-12)


@SETTINGS
@given(seed=st.integers(0, 10_000), beta=st.floats(0.01, 2.0), norm=st.sampled_from(["all-tokens", "failed-tokens"]))
def test_masked_equals_unmasked_when_every_reward_is_zero(seed, beta, norm):
    logp, old, teacher, adv, r, mask = batch(seed, rewards="zeros")
    base = kw_of(old, teacher, adv, r, mask, beta=beta, kl_norm=norm)
    vm, gm = loss_and_grad(logp, **base, masked=True)
    vu, gu = loss_and_grad(logp, **base, masked=False)
    assert torch.allclose(vm, vu, rtol=1e-12) and torch.allclose(gm, gu, rtol=1e-12)
    # and the KL term is really there (not silently zero)
    v0, _ = loss_and_grad(logp, **{**base, "beta": 0.0})
    assert not torch.allclose(vm, v0)


@SETTINGS
@given(seed=st.integers(0, 10_000), beta=st.floats(0.01, 2.0))
def test_masked_equals_grpo_when_every_reward_is_one(seed, beta):
    logp, old, teacher, adv, r, mask = batch(seed, rewards="ones")
    base = kw_of(old, teacher, adv, r, mask)
    vm, gm = loss_and_grad(logp, **base, beta=beta, masked=True)
    v0, g0 = loss_and_grad(logp, **base, beta=0.0)
    assert torch.allclose(vm, v0, rtol=0, atol=1e-15) and torch.allclose(gm, g0, rtol=0, atol=1e-15)
    vu, _ = loss_and_grad(logp, **base, beta=beta, masked=False)
    assert vu > v0  # unmasked: the k2 term (>= 0, here > 0) is added


@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_kl_gradient_is_zero_on_correct_rollouts(seed):
    logp, old, teacher, adv, r, mask = batch(seed)
    kl = distillation_term(sampled_kl(logp, teacher, mask), r, mask, masked=True)
    (g,) = torch.autograd.grad(kl, logp)
    assert torch.all(g[r == 1] == 0)
    failed = (r == 0)[:, None] & (mask == 1) & (logp.detach() != teacher)
    assert torch.all(g[failed] != 0)


@SETTINGS
@given(seed=st.integers(0, 10_000), est=st.sampled_from(["k1", "k2", "k3"]),
       agg=st.sampled_from(["token-mean", "seq-mean-token-sum"]))
def test_distillation_is_zero_when_student_and_teacher_agree(seed, est, agg):
    logp, old, _, adv, r, mask = batch(seed, rewards="zeros")
    same = logp.detach().clone()
    kl = distillation_term(sampled_kl(logp, same, mask, est), r, mask, masked=True, agg=agg)
    (g,) = torch.autograd.grad(kl, logp)
    assert float(kl.detach()) == 0.0
    if est != "k1":  # k2, k3 have a minimum at agreement; k1 = d has gradient 1 everywhere
        assert torch.all(g == 0)
    v, _ = loss_and_grad(logp, **kw_of(old, same, adv, r, mask, beta=0.7, estimator=est, agg=agg, kl_agg=agg))
    v0, _ = loss_and_grad(logp, **kw_of(old, same, adv, r, mask, beta=0.0, agg=agg))
    assert torch.equal(v, v0)


@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_k2_gradient_is_the_log_ratio(seed):
    """d/d logp of the summed k2 term = log pi_theta - log pi_phi on every valid token (0 on padding)."""
    logp, _, teacher, _, r, mask = batch(seed, rewards="zeros")
    k2 = sampled_kl(logp, teacher, mask, "k2")
    assert torch.all(k2 >= 0)
    summed = distillation_term(k2, r, mask, masked=True, agg="seq-mean-token-sum", global_seqs=1)
    (g,) = torch.autograd.grad(summed, logp)
    assert torch.allclose(g, (logp.detach() - teacher) * mask, rtol=1e-12, atol=1e-15)
    # token-mean: the same, divided by the number of valid tokens, and weighted by 1 - r
    logp2, _, teacher2, _, r2, mask2 = batch(seed + 1)
    tm = distillation_term(sampled_kl(logp2, teacher2, mask2), r2, mask2, masked=True)
    (g2,) = torch.autograd.grad(tm, logp2)
    expect = (logp2.detach() - teacher2) * mask2 * (1 - r2)[:, None] / mask2.sum()
    assert torch.allclose(g2, expect, rtol=1e-12, atol=1e-15)


@SETTINGS
@given(seed=st.integers(0, 10_000), V=st.integers(2, 12))
def test_k2_expected_gradient_is_the_reverse_kl_gradient(seed, V):
    """Exact enumeration over a small vocabulary: sum_y p(y) d/dz 0.5 (log p(y) - log q(y))^2 =
    d/dz KL(p || q) (the update VOLD's estimator implements, docs/deviations.md V2), and it is
    not the forward-KL gradient (p - q)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(V, generator=g, dtype=torch.float64).requires_grad_(True)
    lq = torch.log_softmax(torch.randn(V, generator=g, dtype=torch.float64), -1)
    lp = torch.log_softmax(z, -1)
    p = lp.exp().detach()  # sampling weights held fixed (on-policy)
    expected_k2 = (p * 0.5 * (lp - lq) ** 2).sum()
    (g_k2,) = torch.autograd.grad(expected_k2, z)
    lp2 = torch.log_softmax(z, -1)
    rkl = (lp2.exp() * (lp2 - lq)).sum()
    (g_rkl,) = torch.autograd.grad(rkl, z)
    assert torch.allclose(g_k2, g_rkl, rtol=1e-9, atol=1e-12)
    g_fkl = p - lq.exp()
    if float((g_rkl - g_fkl).abs().max()) > 1e-6:
        assert not torch.allclose(g_k2, g_fkl, atol=1e-9)


@SETTINGS
@given(seed=st.integers(0, 10_000), pieces=st.integers(1, 6), norm=st.sampled_from(["all-tokens", "failed-tokens"]),
       agg=st.sampled_from(["token-mean", "seq-mean-token-sum"]))
def test_micro_batch_pieces_sum_to_the_full_batch(seed, pieces, norm, agg):
    logp, old, teacher, adv, r, mask = batch(seed)
    w = failure_weights(r, True)
    glob = dict(global_tokens=float(mask.sum()), global_seqs=float(len(r)))
    kl_glob = {}
    if norm == "failed-tokens":
        kl_glob = dict(kl_global_tokens=max(float((mask.sum(1) * w).sum()), 1.0),
                       kl_global_seqs=max(float(w.sum()), 1.0))
    full, _ = vold_loss(logp, old, adv, r, mask, beta=0.3, teacher_logp=teacher, kl_norm=norm, agg=agg,
                        kl_agg=agg, **glob, **kl_glob)
    total = 0.0
    for idx in torch.tensor_split(torch.arange(len(r)), pieces):
        part, _ = vold_loss(logp[idx], old[idx], adv[idx], r[idx], mask[idx], beta=0.3, teacher_logp=teacher[idx],
                            kl_norm=norm, agg=agg, kl_agg=agg, **glob, **kl_glob)
        total = total + part
    assert torch.allclose(total, full, rtol=1e-12, atol=1e-14)


def test_failed_tokens_norm_is_the_mean_over_failed_tokens():
    logp, _, teacher, _, r, mask = batch(3)
    r = torch.tensor([0, 1, 0, 1, 1, 0], dtype=torch.float64)
    k2 = sampled_kl(logp, teacher, mask)
    fail = (r == 0)[:, None] & (mask == 1)
    got = distillation_term(k2, r, mask, masked=True, norm="failed-tokens")
    assert torch.allclose(got, k2[fail].mean())
    lit = distillation_term(k2, r, mask, masked=True, norm="all-tokens")
    assert torch.allclose(lit, k2[fail].sum() / mask.sum())


def test_full_vocabulary_options_plug_in():
    """kl_tokens from harness.losses.full_kl: zero when the logits agree, and the reverse and forward
    directions differ otherwise."""
    g = torch.Generator().manual_seed(0)
    B, T, V = 3, 4, 9
    zs = torch.randn(B, T, V, generator=g, dtype=torch.float64, requires_grad=True)
    zt = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.long)
    r = torch.zeros(B, dtype=torch.float64)
    rev = losses.full_kl(zs, zt, mask, "reverse")
    fwd = losses.full_kl(zs, zt, mask, "forward")
    assert not torch.allclose(rev, fwd)
    assert float(losses.full_kl(zs, zs.detach(), mask, "reverse").abs().max()) < 1e-12
    logp = torch.log_softmax(zs, -1)[..., 0]
    adv = torch.zeros(B, dtype=torch.float64)
    loss, stats = vold_loss(logp, logp.detach(), adv, r, mask, beta=1.0, kl_tokens=rev)
    assert torch.allclose(loss, rev.mean())
    with pytest.raises(ValueError, match="exactly one"):
        vold_loss(logp, logp.detach(), adv, r, mask, beta=1.0, kl_tokens=rev, teacher_logp=logp.detach())


def test_bad_inputs_are_refused():
    logp, old, teacher, adv, r, mask = batch(0)
    with pytest.raises(ValueError, match="do not align"):
        sampled_kl(logp, teacher[:, :-1], mask)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        failure_weights(torch.tensor([2.0, 0.0]), masked=True)
    with pytest.raises(ValueError, match="unknown sampled KL estimator"):
        sampled_kl(logp, teacher, mask, "k9")
    assert math.isfinite(float(vold_loss(logp, **kw_of(old, teacher, adv, r, mask, beta=0.1))[0]))
