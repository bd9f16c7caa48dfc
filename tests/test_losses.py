"""Mathematical properties of harness/losses.py (docs/methods/vold.md §7, reopold.md §7, ptdpo.md §7).

References are written here independently, with plain autograd on materialised float64
logits; the module's chunked custom-autograd path must match them in value and gradient.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.losses import (
    AGG_MODES,
    LOSSES,
    HiddenHead,
    agg_loss,
    entropy,
    full_kl,
    get_loss,
    group_advantages,
    jsd,
    kl_estimate,
    policy_loss,
    topk_jsd,
)

F64 = torch.float64
FAST = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**31 - 1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_mask(g: torch.Generator, b: int, t: int, min_len: int = 1) -> torch.Tensor:
    """Right-padded 0/1 mask, each row with at least ``min_len`` valid tokens."""
    lens = torch.randint(min_len, t + 1, (b,), generator=g)
    return (torch.arange(t)[None, :] < lens[:, None]).to(F64)


# ----------------------------------------------------------------------------------------
# Clipped surrogate and aggregation
# ----------------------------------------------------------------------------------------

CL, CH = 0.2, 0.3


@FAST
@given(seed=seeds, b=st.integers(1, 5), t=st.integers(1, 7))
def test_surrogate_is_minus_ratio_times_advantage_inside_clip(seed, b, t):
    g = gen(seed)
    old = -torch.rand(b, t, generator=g, dtype=F64) * 3
    # log-ratios strictly inside (log 0.8, log 1.3)
    lr = math.log(1 - CL) + 1e-3 + torch.rand(b, t, generator=g, dtype=F64) * (math.log(1 + CH) - math.log(1 - CL) - 2e-3)
    logp = (old + lr).requires_grad_()
    adv = torch.randn(b, generator=g, dtype=F64)
    mask = random_mask(g, b, t)
    loss, stats = policy_loss(logp, old, adv, mask, CL, CH, "token-mean")
    ratio = lr.exp()
    expected = -(ratio * adv[:, None] * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, -adv[:, None] * ratio * mask / mask.sum())
    assert stats["clipfrac"] == 0


def test_surrogate_gradient_on_each_side_of_the_clip():
    # columns: (A>0, rho>1.3) (A<0, rho<0.8) (A>0, rho<0.8) (A<0, rho>1.3) (A>0, rho=1)
    adv = torch.tensor([[2.0, -2.0, 2.0, -2.0, 2.0]], dtype=F64)
    ratio = torch.tensor([[1.6, 0.5, 0.5, 1.6, 1.0]], dtype=F64)
    old = torch.full_like(ratio, -1.0)
    logp = (old + ratio.log()).requires_grad_()
    mask = torch.ones_like(ratio)
    loss, stats = policy_loss(logp, old, adv, mask, CL, CH, "seq-mean-token-sum")
    (grad,) = torch.autograd.grad(loss, logp)
    g = grad[0]
    assert g[0] == 0 and g[1] == 0  # clipped side: no gradient
    torch.testing.assert_close(g[2], torch.tensor(-2.0 * 0.5, dtype=F64))  # A>0: push logp up
    torch.testing.assert_close(g[3], torch.tensor(2.0 * 1.6, dtype=F64))  # A<0: push logp down
    torch.testing.assert_close(g[4], torch.tensor(-2.0, dtype=F64))  # rho=1: grad of -s is -A
    # per-token loss is the pessimistic bound: -s(A) >= -rho A  (docs/methods/vold.md §7 item 5)
    expected = -(2 * 1.3) + (-2 * 0.8) * -1 + -(2 * 0.5) + (2 * 1.6) - 2.0
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=F64))
    assert stats["clipfrac"] == pytest.approx(2 / 5)
    assert stats["clipfrac_high"] == pytest.approx(1 / 5) and stats["clipfrac_low"] == pytest.approx(1 / 5)


def test_dual_clip_caps_negative_advantage_loss():
    adv = torch.tensor([[-1.0, -1.0, 1.0]], dtype=F64)
    ratio = torch.tensor([[5.0, 2.0, 5.0]], dtype=F64)
    old = torch.zeros_like(ratio)
    logp = ratio.log().requires_grad_()
    loss, stats = policy_loss(logp, old, adv, torch.ones_like(ratio), CL, CH, "seq-mean-token-sum", clip_ratio_c=3.0)
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(loss, torch.tensor(3.0 + 2.0 - 1.3, dtype=F64))
    assert grad[0, 0] == 0 and grad[0, 1] != 0 and grad[0, 2] == 0
    assert stats["dual_clipfrac"] == pytest.approx(1 / 3)


def pad(x: torch.Tensor, mask: torch.Tensor, g: torch.Generator, extra_cols: int, extra_rows: int):
    """Append mask-0 columns and rows holding garbage (huge values, inf, nan)."""
    b, t = x.shape
    garbage = torch.randn(b + extra_rows, t + extra_cols, generator=g, dtype=F64) * 1e4
    garbage[::2, ::3] = float("nan")
    garbage[1::2, 1::3] = float("inf")
    xp = garbage.clone()
    xp[:b, :t] = x
    mp = torch.zeros(b + extra_rows, t + extra_cols, dtype=F64)
    mp[:b, :t] = mask
    return xp, mp


@FAST
@given(seed=seeds, b=st.integers(1, 4), t=st.integers(1, 6), cols=st.integers(1, 4), rows=st.integers(0, 2),
       agg=st.sampled_from(AGG_MODES))
def test_aggregation_unchanged_by_padding(seed, b, t, cols, rows, agg):
    g = gen(seed)
    x = torch.randn(b, t, generator=g, dtype=F64)
    mask = random_mask(g, b, t) * (torch.rand(b, t, generator=g) > 0.2)
    xp, mp = pad(x, mask, g, cols, rows)
    torch.testing.assert_close(agg_loss(xp, mp, agg, max_len=16), agg_loss(x, mask, agg, max_len=16))

    # the full surrogate with garbage in every padded input: same value, same finite gradient
    old = -torch.rand(b, t, generator=g, dtype=F64)
    logp = old + 0.5 * torch.randn(b, t, generator=g, dtype=F64)
    adv = torch.randn(b, t, generator=g, dtype=F64)
    lp = logp.clone().requires_grad_()
    base, _ = policy_loss(lp, old, adv, mask, agg=agg, max_len=16)
    (gbase,) = torch.autograd.grad(base, lp)
    lpp = pad(logp, mask, g, cols, rows)[0].requires_grad_()
    padded, _ = policy_loss(lpp, pad(old, mask, g, cols, rows)[0], pad(adv, mask, g, cols, rows)[0], mp, agg=agg, max_len=16)
    (gpad,) = torch.autograd.grad(padded, lpp)
    torch.testing.assert_close(padded, base)
    torch.testing.assert_close(gpad[:b, :t], gbase)
    assert torch.all(gpad[mp == 0] == 0)


def test_token_mean_and_seq_mean_weigh_differently():
    # sequence 0: one token of value 1; sequence 1: three tokens of value 2.
    x = torch.tensor([[1.0, 0.0, 0.0], [2.0, 2.0, 2.0]], dtype=F64)
    m = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=F64)
    assert agg_loss(x, m, "token-mean").item() == pytest.approx((1 + 6) / 4)  # tokens weigh equally
    assert agg_loss(x, m, "seq-mean-token-mean").item() == pytest.approx((1 + 2) / 2)  # sequences weigh equally
    assert agg_loss(x, m, "seq-mean-token-sum").item() == pytest.approx((1 + 6) / 2)
    assert agg_loss(x, m, "seq-mean-token-sum-norm", max_len=10).item() == pytest.approx((1 + 6) / 2 / 10)
    with pytest.raises(ValueError, match="max_len"):
        agg_loss(x, m, "seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="unknown agg"):
        agg_loss(x, m, "sum")
    assert agg_loss(x, torch.zeros_like(m), "token-mean").item() == 0.0


@FAST
@given(seed=seeds, b=st.integers(2, 7), t=st.integers(1, 6), agg=st.sampled_from(AGG_MODES))
def test_global_denominators_make_pieces_sum_to_full_batch(seed, b, t, agg):
    g = gen(seed)
    old = -torch.rand(b, t, generator=g, dtype=F64)
    logp = (old + 0.4 * torch.randn(b, t, generator=g, dtype=F64)).requires_grad_()
    adv = torch.randn(b, generator=g, dtype=F64)
    mask = random_mask(g, b, t, min_len=0)  # rows with no token are allowed
    full, _ = policy_loss(logp, old, adv, mask, agg=agg, max_len=8)
    (gfull,) = torch.autograd.grad(full, logp)
    tokens, seqs = mask.sum(), (mask.sum(-1) > 0).sum()
    cuts = sorted(torch.randperm(b - 1, generator=g)[: int(torch.randint(1, b, (1,), generator=g))].add(1).tolist())
    total, grads = 0.0, []
    for lo, hi in zip([0, *cuts], [*cuts, b]):
        width = max(1, int(mask[lo:hi].sum(-1).max()))  # each piece trimmed to its own padded width
        lp = logp.detach()[lo:hi, :width].clone().requires_grad_()
        piece, _ = policy_loss(lp, old[lo:hi, :width], adv[lo:hi], mask[lo:hi, :width], agg=agg,
                               global_tokens=tokens, global_seqs=seqs, max_len=8)
        total = total + piece
        (gp,) = torch.autograd.grad(piece, lp)
        grads.append(torch.nn.functional.pad(gp, (0, t - width)))
    torch.testing.assert_close(total, full)
    torch.testing.assert_close(torch.cat(grads), gfull)


# ----------------------------------------------------------------------------------------
# Group advantages
# ----------------------------------------------------------------------------------------

groups = st.lists(st.integers(1, 6), min_size=1, max_size=5)  # group sizes


def grouped_rewards(g, sizes, binary):
    ids = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    n = int(ids.numel())
    r = torch.randint(0, 2, (n,), generator=g).to(F64) if binary else torch.randn(n, generator=g, dtype=F64)
    return r, ids


@FAST
@given(seed=seeds, sizes=groups, binary=st.booleans(), scale=st.booleans(), unbiased=st.booleans())
def test_group_advantages_mean_zero_and_permutation_invariant(seed, sizes, binary, scale, unbiased):
    g = gen(seed)
    r, ids = grouped_rewards(g, sizes, binary)
    adv = group_advantages(r, ids, scale=scale, unbiased=unbiased)
    for k in range(len(sizes)):
        sel = ids == k
        assert abs(adv[sel].sum().item()) < 1e-9
        if torch.all(r[sel] == r[sel][0]):
            assert torch.all(adv[sel] == 0)  # exactly: no signal from a constant group
    perm = torch.randperm(r.numel(), generator=g)
    torch.testing.assert_close(group_advantages(r[perm], ids[perm], scale=scale, unbiased=unbiased), adv[perm])
    # ids as arbitrary hashables (verl's uid strings) give the same result
    torch.testing.assert_close(group_advantages(r, [f"uid-{i}" for i in ids.tolist()], scale=scale, unbiased=unbiased), adv)


@FAST
@given(seed=seeds, sizes=groups, a=st.floats(0.01, 100), b=st.floats(-100, 100))
def test_group_advantages_affine_invariance(seed, sizes, a, b):
    g = gen(seed)
    r, ids = grouped_rewards(g, sizes, binary=False)
    base = group_advantages(r, ids, eps=0.0)
    torch.testing.assert_close(group_advantages(a * r + b, ids, eps=0.0), base, rtol=1e-7, atol=1e-7)
    # Dr.GRPO's unscaled variant: shift-invariant, scales with a
    torch.testing.assert_close(group_advantages(a * r + b, ids, scale=False), a * group_advantages(r, ids, scale=False),
                               rtol=1e-7, atol=1e-7 * a)


@given(k=st.integers(2, 12), data=st.data())
@settings(max_examples=30, deadline=None)
def test_group_advantages_binary_closed_form(k, data):
    m = data.draw(st.integers(1, k - 1))
    r = torch.tensor([1.0] * m + [0.0] * (k - m), dtype=F64)
    p = m / k
    for unbiased, c in ((False, 1.0), (True, math.sqrt((k - 1) / k))):
        adv = group_advantages(r, torch.zeros(k), eps=0.0, unbiased=unbiased)
        torch.testing.assert_close(adv[:m], torch.full((m,), c * math.sqrt((1 - p) / p), dtype=F64))
        torch.testing.assert_close(adv[m:], torch.full((k - m,), -c * math.sqrt(p / (1 - p)), dtype=F64))


# ----------------------------------------------------------------------------------------
# Sampled-token KL estimators
# ----------------------------------------------------------------------------------------


def test_k1_k3_unbiased_by_monte_carlo():
    g = gen(0)
    n = 400_000
    for _ in range(3):
        lp = torch.log_softmax(torch.randn(7, generator=g, dtype=F64), -1)
        lq = torch.log_softmax(torch.randn(7, generator=g, dtype=F64), -1)
        kl = (lp.exp() * (lp - lq)).sum()
        y = torch.multinomial(lp.exp(), n, replacement=True, generator=g)
        for kind in ("k1", "k3"):
            est = kl_estimate(lp[y][None], lq[y][None], kind)
            se = est.std() / math.sqrt(n)
            assert abs(est.mean() - kl) < 5 * se, (kind, est.mean().item(), kl.item(), se.item())
        # k2 is biased in general, but its expectation is >= 0 and of the same order
        k2 = kl_estimate(lp[y][None], lq[y][None], "k2").mean()
        assert k2 > 0


@FAST
@given(seed=seeds)
def test_k2_k3_nonnegative_and_k2_gradient(seed):
    g = gen(seed)
    lp = (torch.randn(3, 5, generator=g, dtype=F64) * 5).requires_grad_()
    lq = torch.randn(3, 5, generator=g, dtype=F64) * 5
    assert torch.all(kl_estimate(lp, lq, "k2") >= 0) and torch.all(kl_estimate(lp, lq, "k3") >= 0)
    assert torch.all(kl_estimate(lq, lq, "k3") == 0) and torch.all(kl_estimate(lq, lq, "k2") == 0)
    (grad,) = torch.autograd.grad(kl_estimate(lp, lq, "k2").sum(), lp)
    torch.testing.assert_close(grad, (lp - lq).detach())
    torch.testing.assert_close(kl_estimate(lp, lq, "k1"), lp - lq)


@FAST
@given(seed=seeds, v=st.integers(2, 12))
def test_k2_gradient_identity_is_reverse_kl_gradient(seed, v):
    """sum_y p(y) d/dz k2(y) == d/dz KL(p||q) by exact enumeration (docs/methods/vold.md §7 item 4)."""
    g = gen(seed)
    z = torch.randn(v, generator=g, dtype=F64).requires_grad_()
    lq = torch.log_softmax(torch.randn(v, generator=g, dtype=F64), -1)
    lp = torch.log_softmax(z, -1)
    weighted = (lp.exp().detach() * kl_estimate(lp[None], lq[None], "k2")[0]).sum()
    (g_k2,) = torch.autograd.grad(weighted, z)
    p = lp.exp().detach()
    kl = (p * (lp.detach() - lq)).sum()
    torch.testing.assert_close(g_k2, p * (lp.detach() - lq - kl))


def test_kl_estimate_mask_keeps_gradients_finite():
    lp = torch.tensor([[-1.0, -1e4]], dtype=F64, requires_grad=True)
    lq = torch.tensor([[-2.0, 0.0]], dtype=F64)
    mask = torch.tensor([[1.0, 0.0]], dtype=F64)
    loss = agg_loss(kl_estimate(lp, lq, "k3", mask=mask), mask)
    (grad,) = torch.autograd.grad(loss, lp)
    assert torch.isfinite(grad).all() and grad[0, 1] == 0


# ----------------------------------------------------------------------------------------
# Full-vocabulary quantities: references with materialised float64 logits and autograd
# ----------------------------------------------------------------------------------------


def ref_divergence(kind: str, zs: torch.Tensor, zt: torch.Tensor | None, k: int | None = None, support="union"):
    lp = torch.log_softmax(zs, -1)
    p = lp.exp()
    if kind == "entropy":
        return -(p * lp).sum(-1)
    lq = torch.log_softmax(zt, -1)
    q = lq.exp()
    if kind == "reverse":
        return (p * (lp - lq)).sum(-1)
    if kind == "forward":
        return (q * (lq - lp)).sum(-1)
    if k is not None:  # compressed distributions (S, tail), PTD-PO Eqs. 14-16
        s = torch.zeros_like(zs, dtype=torch.bool)
        kk = min(k, zs.shape[-1])
        if support in ("union", "student"):
            s.scatter_(-1, zs.topk(kk, -1).indices, True)
        if support in ("union", "teacher"):
            s.scatter_(-1, zt.topk(kk, -1).indices, True)
        p_t = (p * ~s).sum(-1, keepdim=True)
        q_t = (q * ~s).sum(-1, keepdim=True)
        p, q = torch.cat([p * s, p_t], -1), torch.cat([q * s, q_t], -1)
    m = 0.5 * (p + q)
    kl = lambda a: torch.where(a > 0, a * (a.clamp_min(1e-300).log() - m.clamp_min(1e-300).log()), 0).sum(-1)
    return 0.5 * kl(q) + 0.5 * kl(p)


def call(kind, s, t, mask, chunk, k=None, support="union"):
    if kind == "entropy":
        return entropy(s, mask, chunk)
    if kind in ("reverse", "forward"):
        return full_kl(s, t, mask, kind, chunk)
    if k is None:
        return jsd(s, t, mask, chunk)
    return topk_jsd(s, t, mask, k, chunk, support)


KINDS = [("reverse", None, "union"), ("forward", None, "union"), ("jsd", None, "union"), ("jsd", 2, "union"),
         ("jsd", 3, "student"), ("jsd", 1, "teacher"), ("entropy", None, "union")]


@settings(max_examples=80, deadline=None)
@given(seed=seeds, kind=st.sampled_from(KINDS), b=st.integers(1, 3), t=st.integers(1, 6), h=st.integers(1, 5),
       v=st.integers(2, 13), chunk=st.integers(1, 8), hidden_student=st.booleans(), hidden_teacher=st.booleans())
def test_chunked_equals_unchunked_values_and_gradients(seed, kind, b, t, h, v, chunk, hidden_student, hidden_teacher):
    """Chunk sizes that do and do not divide the number of tokens; student and teacher each as
    logits or as (hidden, weight); random per-token upstream gradients."""
    name, k, support = kind
    g = gen(seed)
    mask = random_mask(g, b, t) * (torch.rand(b, t, generator=g) > 0.25)
    hs = torch.randn(b, t, h, generator=g, dtype=F64).requires_grad_()
    ws = (torch.randn(v, h, generator=g, dtype=F64) * 2).requires_grad_()
    ht = torch.randn(b, t, h, generator=g, dtype=F64).requires_grad_()  # teacher: must get no gradient
    wt = (torch.randn(v, h, generator=g, dtype=F64) * 2).requires_grad_()
    up = torch.randn(b, t, generator=g, dtype=F64)

    zs_ref = hs @ ws.T
    ref = ref_divergence(name, zs_ref, (ht @ wt.T).detach(), k, support) * mask
    if hidden_student:
        student, wrt = HiddenHead(hs, ws), (hs, ws)
    else:
        zs = zs_ref.detach().clone().requires_grad_()
        student, wrt = zs, (zs,)
    teacher = HiddenHead(ht, wt) if hidden_teacher else (ht @ wt.T)
    ref_wrt = (hs, ws) if hidden_student else (zs_ref,)
    g_ref = torch.autograd.grad((ref * up).sum(), ref_wrt)
    for c in (chunk, b * t + 3):
        out = call(name, student, teacher, mask, c, k, support)
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-12)
        assert torch.all(out[mask == 0] == 0)
        grads = torch.autograd.grad((out * up).sum(), wrt + ((ht, wt) if hidden_teacher and name != "entropy" else ()),
                                    allow_unused=True)
        for got, want in zip(grads, g_ref):
            torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-11)
        for teacher_grad in grads[len(wrt):]:
            assert teacher_grad is None or torch.all(teacher_grad == 0)


@FAST
@given(seed=seeds, v=st.integers(2, 40), scale=st.floats(0.1, 8.0))
def test_kl_and_jsd_bounds_and_symmetry(seed, v, scale):
    g = gen(seed)
    zs = torch.randn(2, 3, v, generator=g, dtype=F64) * scale
    zt = torch.randn(2, 3, v, generator=g, dtype=F64) * scale
    mask = torch.ones(2, 3, dtype=F64)
    for direction in ("reverse", "forward"):
        val = full_kl(zs, zt, mask, direction)
        torch.testing.assert_close(val, ref_divergence(direction, zs, zt))
        assert torch.all(val > 0)  # distinct distributions (random logits differ non-uniformly)
        # equal distributions, also when the logits differ by a per-token constant
        assert full_kl(zs, zs + 3.0, mask, direction).abs().max() < 1e-12
    d = jsd(zs, zt, mask)
    torch.testing.assert_close(d, jsd(zt, zs, mask), rtol=1e-12, atol=1e-14)  # symmetric
    assert torch.all(d > 0) and torch.all(d <= math.log(2))
    assert jsd(zs, zs - 1.0, mask).abs().max() < 1e-12
    kk = int(torch.randint(1, v + 1, (1,), generator=g))
    for support in ("union", "student", "teacher"):
        dk = topk_jsd(zs, zt, mask, kk, support=support)
        assert torch.all(dk >= -1e-15) and torch.all(dk <= d + 1e-12)  # coarse-graining (Eq. 62)
        torch.testing.assert_close(topk_jsd(zt, zs, mask, kk, support=support),
                                   topk_jsd(zs, zt, mask, kk, support={"union": "union", "student": "teacher",
                                                                       "teacher": "student"}[support]))
    torch.testing.assert_close(topk_jsd(zs, zt, mask, v), d)  # K covers the vocabulary
    torch.testing.assert_close(topk_jsd(zs, zt, mask, v + 5, support="student"), d)


def test_jsd_is_log2_for_disjoint_supports():
    zs = torch.tensor([[[0.0, 0.0, -800.0, -800.0]]], dtype=F64)
    zt = torch.tensor([[[-800.0, -800.0, 0.0, 0.0]]], dtype=F64)
    mask = torch.ones(1, 1)
    torch.testing.assert_close(jsd(zs, zt, mask), torch.full((1, 1), math.log(2), dtype=F64))
    torch.testing.assert_close(topk_jsd(zs, zt, mask, k=2), torch.full((1, 1), math.log(2), dtype=F64))


@FAST
@given(seed=seeds, v=st.integers(4, 30), k=st.integers(1, 3))
def test_topk_gap_is_the_tail_term(seed, v, k):
    """D_JSD - D_TopK = 0.5 q_tail KL(q_S'||m_S') + 0.5 p_tail KL(p_S'||m_S')  (PTD-PO Eq. 63)."""
    g = gen(seed)
    zs, zt = torch.randn(1, 1, v, generator=g, dtype=F64) * 2, torch.randn(1, 1, v, generator=g, dtype=F64) * 2
    mask = torch.ones(1, 1)
    p, q = zs.softmax(-1)[0, 0], zt.softmax(-1)[0, 0]
    s = torch.zeros(v, dtype=torch.bool)
    s[zs[0, 0].topk(k).indices] = True
    s[zt[0, 0].topk(k).indices] = True
    if s.all():
        return
    m = 0.5 * (p + q)
    pt, qt, mt = p[~s].sum(), q[~s].sum(), m[~s].sum()
    cond_kl = lambda a, at: ((a[~s] / at) * ((a[~s] / at).log() - (m[~s] / mt).log())).sum()
    gap = 0.5 * qt * cond_kl(q, qt) + 0.5 * pt * cond_kl(p, pt)
    torch.testing.assert_close((jsd(zs, zt, mask) - topk_jsd(zs, zt, mask, k))[0, 0], gap, rtol=1e-9, atol=1e-12)
    # hard truncation (renormalise over S, no tail) is a different quantity (docs/methods/ptdpo.md §7 item 1)
    ps, qs = p[s] / p[s].sum(), q[s] / q[s].sum()
    ms = 0.5 * (ps + qs)
    hard = 0.5 * (ps * (ps / ms).log()).sum() + 0.5 * (qs * (qs / ms).log()).sum()
    assert abs(hard - topk_jsd(zs, zt, mask, k)[0, 0]) > 1e-10


@FAST
@given(seed=seeds, v=st.integers(2, 50), scale=st.floats(0.0, 10.0))
def test_entropy_bounds(seed, v, scale):
    g = gen(seed)
    z = torch.randn(2, 4, v, generator=g, dtype=F64) * scale
    mask = torch.ones(2, 4)
    h = entropy(z, mask, chunk_size=3)
    assert torch.all(h >= -1e-12) and torch.all(h <= math.log(v) + 1e-12)
    torch.testing.assert_close(entropy(torch.full((1, 2, v), 0.7, dtype=F64), torch.ones(1, 2)),
                               torch.full((1, 2), math.log(v), dtype=F64))


def test_bf16_hidden_inputs_are_computed_in_fp32():
    g = gen(1)
    h = torch.randn(2, 5, 8, generator=g).to(torch.bfloat16).requires_grad_()
    w = torch.randn(11, 8, generator=g).to(torch.bfloat16).requires_grad_()
    ht = torch.randn(2, 5, 8, generator=g).to(torch.bfloat16)
    out = full_kl(HiddenHead(h, w), HiddenHead(ht, w), torch.ones(2, 5), chunk_size=3)
    assert out.dtype == torch.float32
    ref = ref_divergence("reverse", (h @ w.T).double(), (ht @ w.T).double())
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
    out.sum().backward()
    assert h.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.bfloat16 and torch.isfinite(w.grad.float()).all()


def test_registry_and_input_errors():
    for name in ("policy_loss", "agg_loss", "group_advantages", "kl_estimate", "full_kl", "jsd", "topk_jsd", "entropy"):
        assert get_loss(name) is LOSSES[name]
    with pytest.raises(KeyError, match="known"):
        get_loss("nope")
    z = torch.zeros(1, 2, 5)
    with pytest.raises(ValueError, match="differ"):
        full_kl(z, torch.zeros(1, 2, 6), torch.ones(1, 2))
    with pytest.raises(ValueError, match="direction"):
        full_kl(z, z, torch.ones(1, 2), "sideways")
    with pytest.raises(ValueError, match="mask"):
        entropy(z, torch.ones(2, 2))
    with pytest.raises(ValueError, match="k2"):
        kl_estimate(z[0], z[0], "k4")
