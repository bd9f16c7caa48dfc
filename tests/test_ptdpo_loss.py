"""Property tests of PTD-PO's objective (methods/ptdpo/loss.py; arXiv 2606.07000 Eqs. 1-17 and
App. D; docs/methods/ptdpo.md §7)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import losses
from methods.ptdpo.loss import (compressed_distributions, group_stats, ptd_divergence, ptd_term, ptdpo_loss,
                                ref_kl_tokens, routing_weights)

SETTINGS = settings(max_examples=30, deadline=None)
F64 = torch.float64
LOG2 = math.log(2)
seeds = st.integers(0, 10_000)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def logits(seed: int, n: int, v: int, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    return (torch.randn(n, v, generator=g, dtype=F64) * scale, torch.randn(n, v, generator=g, dtype=F64) * scale)


def jsd_of(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """JSD of explicit distributions along the last axis (Eq. 13), 0 log 0 = 0."""
    m = 0.5 * (p + q)
    kl = lambda a: torch.where(a > 0, a * (a.clamp_min(1e-300).log() - m.clamp_min(1e-300).log()), torch.zeros_like(a))
    return 0.5 * kl(p).sum(-1) + 0.5 * kl(q).sum(-1)


def per_token(zs: torch.Tensor, zt: torch.Tensor, k: int, divergence: str = "topk_jsd", support: str = "union"):
    """D_PTD of rows (N, V) through the method's function, as (N,)."""
    mask = torch.ones(1, zs.shape[0])
    return ptd_divergence(zs[None], zt[None], mask, divergence, k=k, support=support)[0]


# ---------------------------------------------------------------- the divergence (Eqs. 13-17)

@SETTINGS
@given(seed=seeds, v=st.integers(2, 60), k=st.integers(1, 70), scale=st.floats(0.1, 6.0))
def test_topk_jsd_symmetric_bounded_and_zero_iff_equal(seed, v, k, scale):
    zs, zt = logits(seed, 4, v, scale)
    d = per_token(zs, zt, k)
    torch.testing.assert_close(d, per_token(zt, zs, k), rtol=1e-12, atol=1e-14)  # symmetric (union support)
    assert torch.all(d >= -1e-15) and torch.all(d <= LOG2 + 1e-12)  # Eq. 43 in compressed coordinates
    assert per_token(zs, zs + 2.5, k).abs().max() < 1e-12  # q = p (logits equal up to a constant): 0


def test_jsd_reaches_log2_exactly_on_disjoint_supports():
    zs = torch.tensor([[0.0, 0.0, -900.0, -900.0, -900.0]], dtype=F64)
    zt = torch.tensor([[-900.0, -900.0, 0.0, 0.0, -900.0]], dtype=F64)
    for div, k in (("topk_jsd", 2), ("topk_jsd", 5), ("jsd", 1)):
        torch.testing.assert_close(per_token(zs, zt, k, div), torch.tensor([LOG2], dtype=F64))


@SETTINGS
@given(seed=seeds, v=st.integers(2, 80), k=st.integers(1, 100))
def test_compressed_distributions_conserve_mass(seed, v, k):
    """Eqs. 15-16: the tail bucket makes both compressed distributions sum to one, every entry
    non-negative; K <= |S| <= min(2K, V); S holds both arg-maxes."""
    zs, zt = logits(seed, 5, v, 3.0)
    pt, qt, in_s = compressed_distributions(zs, zt, k)
    for x in (pt, qt):
        assert torch.all(x >= 0)
        torch.testing.assert_close(x.sum(-1), torch.ones(5, dtype=F64), rtol=0, atol=1e-12)
    size = in_s.sum(-1)
    assert torch.all(size >= min(k, v)) and torch.all(size <= min(2 * k, v))
    rows = torch.arange(5)
    assert torch.all(in_s[rows, zs.argmax(-1)]) and torch.all(in_s[rows, zt.argmax(-1)])
    # the chunked hidden-state kernel computes exactly JSD(qtilde, ptilde) (Eq. 17)
    torch.testing.assert_close(per_token(zs, zt, k), jsd_of(pt, qt), rtol=1e-10, atol=1e-13)


@SETTINGS
@given(seed=seeds, v=st.integers(2, 40), extra=st.integers(0, 30))
def test_topk_equals_full_jsd_when_k_covers_the_vocabulary(seed, v, extra):
    zs, zt = logits(seed, 3, v)
    torch.testing.assert_close(per_token(zs, zt, v + extra), per_token(zs, zt, 1, "jsd"), rtol=1e-12, atol=1e-14)


@SETTINGS
@given(seed=seeds, v=st.integers(6, 50), k=st.integers(1, 3))
def test_tail_bucket_bounds_full_jsd_and_hard_truncation_differs(seed, v, k):
    """Eq. 62: D_TopK <= D_JSD; renormalising over S without a tail is another quantity."""
    zs, zt = logits(seed, 3, v)
    d_k, d = per_token(zs, zt, k), per_token(zs, zt, 1, "jsd")
    assert torch.all(d_k <= d + 1e-12)
    pt, qt, in_s = compressed_distributions(zs, zt, k)
    partial = ~in_s.all(-1)
    if partial.any():
        hard_p = torch.where(in_s, zs.softmax(-1), 0.0)
        hard_q = torch.where(in_s, zt.softmax(-1), 0.0)
        hard = jsd_of(hard_p / hard_p.sum(-1, keepdim=True), hard_q / hard_q.sum(-1, keepdim=True))
        assert torch.all((hard - d_k)[partial].abs() > 1e-12)


@SETTINGS
@given(seed=seeds, v=st.integers(2, 40), k=st.integers(1, 50), scale=st.floats(0.1, 12.0))
def test_logit_gradient_matches_eq42_in_compressed_coordinates_and_is_bounded(seed, v, k, scale):
    """dD/dz_v = 0.5 p_v (l_c(v) - E_{c~ptilde} l_c), l = log(ptilde / mtilde), tail tokens mapped to
    the tail category (Eq. 42); |dD/dz| <= 0.5 (0.5 + log 2) < 0.6 for every teacher (App. D.2)."""
    zs, zt = logits(seed, 3, v, scale)
    zs.requires_grad_(True)
    (g,) = torch.autograd.grad(per_token(zs, zt, k).sum(), zs)
    with torch.no_grad():
        pt, qt, in_s = compressed_distributions(zs, zt, k)
        mt = 0.5 * (pt + qt)
        ell = torch.where(pt > 0, (pt.clamp_min(1e-300) / mt.clamp_min(1e-300)).log(), torch.zeros_like(pt))
        e = (pt * ell).sum(-1, keepdim=True)
        ell_v = torch.where(in_s, ell[:, :-1], ell[:, -1:].expand_as(zs))
        want = 0.5 * zs.softmax(-1) * (ell_v - e)
    torch.testing.assert_close(g, want, rtol=1e-8, atol=1e-11)
    assert g.abs().max() < 0.5 * (0.5 + LOG2)


def test_reverse_kl_logit_gradient_is_unbounded_where_jsd_stays_bounded():
    """Eq. 38: as q(v) -> 0 with p fixed, the reverse-KL gradient grows without bound; Eq. 42's does not."""
    zs = torch.tensor([[0.0, 0.0, 0.0]], dtype=F64, requires_grad=True)
    grads = {}
    for gap in (5.0, 50.0, 500.0):
        zt = torch.tensor([[0.0, 0.0, -gap]], dtype=F64)
        for div in ("reverse_kl", "jsd"):
            (g,) = torch.autograd.grad(per_token(zs, zt, 1, div).sum(), zs)
            grads[div, gap] = g.abs().max().item()
    assert grads["reverse_kl", 500.0] > 50 and grads["reverse_kl", 500.0] > 5 * grads["reverse_kl", 50.0]
    assert max(grads["jsd", gap] for gap in (5.0, 50.0, 500.0)) < 0.6
    # forward KL's logit gradient is p - q (Eq. 36)
    zt = torch.tensor([[0.3, -1.0, 2.0]], dtype=F64)
    (g,) = torch.autograd.grad(per_token(zs, zt, 1, "forward_kl").sum(), zs)
    torch.testing.assert_close(g, zs.detach().softmax(-1) - zt.softmax(-1))


def test_teacher_gets_no_gradient_and_detaching_it_changes_nothing():
    zs, zt = logits(3, 4, 12)
    zs.requires_grad_(True)
    zt_leaf = zt.clone().requires_grad_(True)
    a = per_token(zs, zt_leaf, 3)
    b = per_token(zs, zt.detach(), 3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    a.sum().backward()
    assert zt_leaf.grad is None or torch.all(zt_leaf.grad == 0)


# ---------------------------------------------------------------- routing (Eqs. 5-8, 79)

groups_st = st.lists(st.lists(st.integers(0, 1), min_size=1, max_size=6), min_size=1, max_size=6)


def flat(groups):
    acc = torch.tensor([a for g in groups for a in g], dtype=torch.float32)
    gid = torch.tensor([i for i, g in enumerate(groups) for _ in g])
    return acc, gid


@SETTINGS
@given(groups=groups_st, tau=st.floats(-0.5, 1.5))
def test_routing_selects_exactly_the_failed_rollouts_of_groups_below_tau(groups, tau):
    acc, gid = flat(groups)
    alpha = routing_weights(acc, gid, tau)
    means = [sum(g) / len(g) for g in groups]
    want = [float(a == 0 and means[i] < tau) for i, g in enumerate(groups) for a in g]
    assert alpha.tolist() == want
    everything = routing_weights(acc, gid, tau, "all")
    assert everything.tolist() == [float(means[i] < tau) for i, g in enumerate(groups) for _ in g]
    allpass = torch.tensor([means[i] == 1 for i in gid.tolist()])
    assert torch.all(alpha[allpass] == 0)  # an all-pass group never contributes
    if tau <= 1.0:
        assert torch.all(everything[allpass] == 0)


@SETTINGS
@given(groups=groups_st)
def test_tau_one_is_one_minus_accuracy_and_tau_zero_routes_nothing(groups):
    acc, gid = flat(groups)
    assert torch.equal(routing_weights(acc, gid, 1.0), 1 - acc)
    assert not routing_weights(acc, gid, 0.0).any() and not routing_weights(acc, gid, -1.0, "all").any()


def test_group_stats_partition_groups():
    acc, gid = flat([[0, 0], [1, 0], [1, 1], [0, 0, 0]])
    assert group_stats(acc, gid) == {"groups_all_fail": 0.5, "groups_informative": 0.25, "groups_all_pass": 0.25}


def test_routing_refuses_non_binary_range():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        routing_weights(torch.tensor([0.0, 1.1]), torch.tensor([0, 0]))


# ---------------------------------------------------------------- the objective (Eqs. 3, 11, 12)

def batch(seed: int, B: int = 6, T: int = 5, V: int = 11, G: int = 3):
    g = gen(seed)
    zs = torch.randn(B, T, V, generator=g, dtype=F64, requires_grad=True)
    zt = torch.randn(B, T, V, generator=g, dtype=F64)
    ids = torch.randint(0, V, (B, T), generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    acc = torch.randint(0, 2, (B,), generator=g).float()
    gid = torch.arange(B) // G
    fmt = torch.randint(0, 2, (B,), generator=g).double()
    adv = losses.group_advantages(0.1 * fmt + 0.9 * acc.double(), gid)
    old = (zs.detach().log_softmax(-1).gather(-1, ids[..., None])[..., 0]
           + 0.2 * torch.randn(B, T, generator=g, dtype=F64))
    ref = old + 0.3 * torch.randn(B, T, generator=g, dtype=F64)
    return zs, zt, ids, mask, acc, gid, adv, old, ref


def full_loss(zs, zt, ids, mask, acc, gid, adv, old, ref, *, lam, tau=1.0, selection="failed", **kw):
    logp = zs.log_softmax(-1).gather(-1, ids[..., None])[..., 0] * mask
    alpha = routing_weights(acc, gid, tau, selection)
    routed = mask * alpha[:, None].long()
    ptd_tokens = ptd_divergence(zs, zt, routed, k=4) if lam != 0 else None
    return ptdpo_loss(logp, old, adv, mask, lambda_ptd=lam, alpha=alpha, ptd_tokens=ptd_tokens, ref_logp=ref,
                      kl_coef=0.01, clip_ratio_c=3.0, **kw)


@SETTINGS
@given(seed=seeds, tau=st.floats(-1.0, 1.5), lam=st.floats(0.01, 2.0))
def test_lambda_zero_or_nothing_routed_is_the_plain_optimiser_in_value_and_gradient(seed, tau, lam):
    zs, zt, ids, mask, acc, gid, adv, old, ref = batch(seed)
    for kw in ({}, {"clip_high": 0.28}, {"ratio_level": "sequence", "agg": "seq-mean-token-mean"}):
        base, _ = full_loss(zs, zt, ids, mask, acc, gid, adv, old, ref, lam=0.0, **kw)
        (g_base,) = torch.autograd.grad(base, zs)
        logp = zs.log_softmax(-1).gather(-1, ids[..., None])[..., 0] * mask
        pg, _ = losses.policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=kw.get("clip_high", 0.3),
                                   clip_ratio_c=3.0, agg=kw.get("agg", "token-mean"),
                                   ratio_level=kw.get("ratio_level", "token"))
        kl = losses.agg_loss(losses.kl_estimate(logp, ref, "k3", mask=mask), mask, kw.get("agg", "token-mean"))
        (g_plain,) = torch.autograd.grad(pg + 0.01 * kl, zs)
        assert torch.equal(base.detach(), (pg + 0.01 * kl).detach()) and torch.equal(g_base, g_plain)
    # tau <= 0 routes nothing: PTD-PO at any lambda is the optimiser alone
    low, _ = full_loss(zs, zt, ids, mask, acc, gid, adv, old, ref, lam=lam, tau=min(tau, 0.0))
    base, _ = full_loss(zs, zt, ids, mask, acc, gid, adv, old, ref, lam=0.0)
    (g_low,) = torch.autograd.grad(low, zs)
    (g_base,) = torch.autograd.grad(base, zs)
    assert torch.equal(low.detach(), base.detach()) and torch.equal(g_low, g_base)


@SETTINGS
@given(seed=seeds, lam=st.floats(0.01, 2.0), selection=st.sampled_from(["failed", "all"]))
def test_guidance_only_touches_routed_rollouts(seed, lam, selection):
    zs, zt, ids, mask, acc, gid, adv, old, ref = batch(seed)
    with_ptd, _ = full_loss(zs, zt, ids, mask, acc, gid, adv, old, ref, lam=lam, selection=selection)
    without, _ = full_loss(zs, zt, ids, mask, acc, gid, adv, old, ref, lam=0.0)
    (g1,) = torch.autograd.grad(with_ptd, zs)
    (g0,) = torch.autograd.grad(without, zs)
    alpha = routing_weights(acc, gid, 1.0, selection).bool()
    assert torch.equal(g1[~alpha], g0[~alpha])  # unrouted rows: exactly the optimiser's gradient
    if alpha.any():
        assert not torch.allclose(g1[alpha], g0[alpha])


@SETTINGS
@given(seed=seeds, pad=st.integers(1, 4))
def test_ptd_term_is_a_weighted_mean_unchanged_by_padding(seed, pad):
    zs, zt, ids, mask, acc, gid, adv, old, ref = batch(seed)
    alpha = routing_weights(acc, gid)
    routed = mask * alpha[:, None].long()
    d = ptd_divergence(zs, zt, routed, k=3)
    val = ptd_term(d, alpha, mask)
    if routed.any():
        in_f = d[routed.bool()]
        assert in_f.min() - 1e-12 <= val <= in_f.max() + 1e-12 and 0 <= val <= LOG2
        assert torch.isclose(val, in_f.mean())
    garbage = torch.full((d.shape[0], pad), float("nan"), dtype=F64)
    padded = ptd_term(torch.cat([d, garbage], 1), alpha, torch.cat([mask, torch.zeros_like(garbage).long()], 1))
    torch.testing.assert_close(padded, val, rtol=1e-14, atol=0)
    # micro-batch pieces with the global |F| sum to the full value
    n_f = float(routed.sum())
    pieces = sum(ptd_term(d[i:i + 2], alpha[i:i + 2], mask[i:i + 2], global_tokens=n_f) for i in range(0, 6, 2))
    torch.testing.assert_close(pieces, val)


def test_empty_routing_gives_zero_with_zero_gradient():
    zs, zt, ids, mask, acc, gid, adv, old, ref = batch(5)
    alpha = torch.zeros(6)
    d = ptd_divergence(zs, zt, mask * 0, k=3)
    val = ptd_term(d, alpha, mask)
    (g,) = torch.autograd.grad(val, zs, allow_unused=True)
    assert val.item() == 0.0 and (g is None or torch.all(g == 0))


# ---------------------------------------------------------------- advantages (Eqs. 1, 68-73)

@SETTINGS
@given(g=st.integers(2, 8), m=st.integers(0, 8), seed=seeds)
def test_advantage_signs_and_the_all_fail_group(g, m, seed):
    m = min(m, g)
    acc = torch.tensor([1.0] * m + [0.0] * (g - m), dtype=F64)
    adv = losses.group_advantages(acc, torch.zeros(g, dtype=torch.long))
    if m in (0, g):  # Eqs. 68-70: all-fail (and all-pass) groups have zero advantage: no surrogate gradient
        assert torch.all(adv == 0)
        logp = torch.randn(g, 4, generator=gen(seed), dtype=F64, requires_grad=True)
        pg, _ = losses.policy_loss(logp, logp.detach(), adv, torch.ones(g, 4))
        (grad,) = torch.autograd.grad(pg, logp)
        assert torch.all(grad == 0)
    else:  # Eqs. 72-73
        assert torch.all(adv[acc == 1] > 0) and torch.all(adv[acc == 0] < 0)


def test_composite_reward_gives_an_all_fail_group_non_zero_advantages():
    """With 0.1 format + 0.9 accuracy an all-fail group still separates well-formed responses
    (docs/methods/ptdpo.md §7 item 5): the surrogate acts there, and routing (on accuracy) too."""
    acc = torch.zeros(4)
    reward = 0.1 * torch.tensor([1.0, 0.0, 1.0, 0.0]) + 0.9 * acc
    adv = losses.group_advantages(reward, torch.zeros(4, dtype=torch.long))
    assert torch.all(adv[[0, 2]] > 0) and torch.all(adv[[1, 3]] < 0)
    assert torch.equal(routing_weights(acc, torch.zeros(4, dtype=torch.long)), torch.ones(4))


# ---------------------------------------------------------------- App. D.1 and the reference KL

@SETTINGS
@given(seed=seeds, v=st.integers(2, 30), tau=st.floats(0.05, 5.0))
def test_lemma_d1_and_eq24(seed, v, tau):
    g = gen(seed)
    log_old = torch.randn(v, generator=g, dtype=F64).log_softmax(-1)
    a = torch.randn(v, generator=g, dtype=F64)
    log_plus = (log_old + a / tau).log_softmax(-1)  # Eq. 19
    objective = lambda lp: (lp.exp() * a).sum() - tau * (lp.exp() * (lp - log_old)).sum()
    for _ in range(5):
        lp = torch.randn(v, generator=g, dtype=F64).log_softmax(-1)
        assert objective(log_plus) >= objective(lp) - 1e-10
        kl = lambda x, y: (x.exp() * (x - y)).sum()
        log_z = torch.logsumexp(log_old + a / tau, 0)
        torch.testing.assert_close(kl(lp, log_plus), kl(lp, log_old) - (lp.exp() * a).sum() / tau + log_z)  # Eq. 24


@SETTINGS
@given(seed=seeds)
def test_reference_kl_estimators_are_non_negative_and_zero_at_the_reference(seed):
    g = gen(seed)
    logp = -torch.rand(3, 4, generator=g, dtype=F64) * 3
    ref = logp + torch.randn(3, 4, generator=g, dtype=F64)
    mask = torch.ones(3, 4)
    for direction in ("reverse", "swapped"):
        assert torch.all(ref_kl_tokens(logp, ref, mask, "k3", direction) >= 0)
        assert torch.all(ref_kl_tokens(logp, logp, mask, "k3", direction) == 0)
    torch.testing.assert_close(ref_kl_tokens(logp, ref, mask, "k3", "swapped"), ref_kl_tokens(ref, logp, mask, "k3"))
