"""Property tests of VGS's objective (methods/vgs/chunked.py, methods/vgs/loss.py; arXiv
2606.00564 Eqs. 3-25; docs/methods/vgs.md §7). Random logits over a small vocabulary for the four
views (student / teacher, with / without the image); the reference is plain autograd on full
logits, so the chunked closed-form gradients are checked against it."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import losses
from methods.opd.loss import gkd_loss
from methods.vgs import loss as V
from methods.vgs.chunked import qstar_logprobs, vgs_terms

SETTINGS = settings(max_examples=20, deadline=None)
B, T, VOC, H = 3, 5, 11, 6


def _mask(g: torch.Generator) -> torch.Tensor:
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    return (torch.arange(T)[None] < lengths[:, None]).long()


def logits4(seed: int, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    zs, zst, zt, ztt = (scale * torch.randn(B, T, VOC, generator=g, dtype=torch.float64) for _ in range(4))
    return zs.requires_grad_(True), zst.requires_grad_(True), zt, ztt, _mask(g)


def kl(la: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
    return (la.exp() * (la - lb)).sum(-1)


def reference(zs, zst, zt, ztt, mask, detach_qstar=True):
    """Plain autograd on full logits: (kl_std, kl_lang, kl_vis, vds, kl_vp_txt), 0 off the mask."""
    lp, lpt, lq, lqt = (z.log_softmax(-1) for z in (zs, zst, zt, ztt))
    lqs = qstar_logprobs(zst.detach() if detach_qstar else zst, zt, ztt)
    m = mask.to(lp.dtype)
    return [x * m for x in (kl(lp, lq), kl(lpt, lqt), kl(lp, lqs), kl(lq, lqt), kl(lpt, lqs))]


def grads_of(vals, weights, leaves):
    obj = sum((w * v).sum() for w, v in zip(weights, vals))
    return torch.autograd.grad(obj, leaves, allow_unused=True)


# ---------------------------------------------------------------- chunking and gradients (§7 items 11-13)

@SETTINGS
@given(seed=st.integers(0, 10_000), chunk=st.integers(1, 9), detach=st.booleans())
def test_chunked_terms_equal_autograd_reference_in_values_and_gradients(seed, chunk, detach):
    zs, zst, zt, ztt, mask = logits4(seed)
    got = vgs_terms(zs, zst, zt, ztt, mask, detach_qstar=detach, chunk_size=chunk)
    ref = reference(zs, zst, zt, ztt, mask, detach)
    for a, b in zip(got, ref):
        assert torch.allclose(a, b.detach(), atol=1e-12)
    w = torch.randn(5, B, T, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    w[3] = 0  # vds carries no gradient
    g_got = grads_of(got, w, (zs, zst))
    g_ref = grads_of(ref, w, (zs, zst))
    for a, b in zip(g_got, g_ref):
        assert torch.allclose(a, b, atol=1e-10)


@SETTINGS
@given(seed=st.integers(0, 10_000), chunk=st.sampled_from([1, 4, None]))
def test_hidden_head_sides_equal_logits_sides_including_weight_gradient(seed, chunk):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(VOC, H, generator=g, dtype=torch.float64).requires_grad_(True)
    wt = torch.randn(VOC, H, generator=g, dtype=torch.float64)
    hs, hst = (torch.randn(B, T, H, generator=g, dtype=torch.float64).requires_grad_(True) for _ in range(2))
    ht, htt = (torch.randn(B, T, H, generator=g, dtype=torch.float64) for _ in range(2))
    mask = _mask(g)
    got = vgs_terms(losses.HiddenHead(hs, w), losses.HiddenHead(hst, w), losses.HiddenHead(ht, wt),
                    losses.HiddenHead(htt, wt), mask, chunk_size=chunk)
    ref = reference(hs @ w.t(), hst @ w.t(), ht @ wt.t(), htt @ wt.t(), mask)
    coef = [1.0, 0.3, 2.0, 0.0, 0.7]
    for a, b in zip(grads_of(got, coef, (hs, hst, w)), grads_of(ref, coef, (hs, hst, w))):
        assert torch.allclose(a, b, atol=1e-10)


def test_detached_target_gives_no_text_gradient_through_kl_vis():
    zs, zst, zt, ztt, mask = logits4(3)
    for detach, expect_zero in ((True, True), (False, False)):
        terms = vgs_terms(zs, zst, zt, ztt, mask, detach_qstar=detach)
        (g,) = torch.autograd.grad(terms.kl_vis.sum(), zst, allow_unused=True)
        assert (g is None or torch.count_nonzero(g) == 0) == expect_zero


# ---------------------------------------------------------------- the visual target (items 1-7)

@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_qstar_is_a_distribution_equal_to_the_product_over_z(seed):
    _, zst, zt, ztt, _ = logits4(seed)
    lqs = qstar_logprobs(zst.detach(), zt, ztt)
    assert torch.allclose(lqs.exp().sum(-1), torch.ones(B, T, dtype=torch.float64), atol=1e-12)
    pt, q, qt = zst.detach().softmax(-1), zt.softmax(-1), ztt.softmax(-1)
    unnorm = pt * q / qt
    assert torch.allclose(lqs.exp(), unnorm / unnorm.sum(-1, keepdim=True), atol=1e-12)


@SETTINGS
@given(seed=st.integers(0, 10_000), c=st.floats(-30, 30))
def test_qstar_invariances(seed, c):
    _, zst, zt, ztt, _ = logits4(seed)
    zst = zst.detach()
    base = qstar_logprobs(zst, zt, ztt)
    shift = c * torch.randn(B, T, 1, dtype=torch.float64)  # a constant per position
    for args in ((zst + shift, zt, ztt), (zst, zt + shift, ztt), (zst, zt, ztt + shift)):
        assert torch.allclose(qstar_logprobs(*args), base, atol=1e-9)
    # the teacher enters only through log Q - log Qt: move both by the same vector
    d = torch.randn(VOC, dtype=torch.float64)
    assert torch.allclose(qstar_logprobs(zst, zt + d, ztt + d), base, atol=1e-9)


@SETTINGS
@given(seed=st.integers(0, 10_000), gamma=st.floats(0.0, 5.0))
def test_matching_language_priors_make_vis_equal_std(seed, gamma):
    zs, _, zt, ztt, mask = logits4(seed)
    t = vgs_terms(zs, ztt.clone().requires_grad_(True), zt, ztt, mask)  # Pt = Qt
    assert torch.allclose(t.kl_vis, t.kl_std, atol=1e-10)
    assert torch.allclose(t.kl_lang, torch.zeros_like(t.kl_lang), atol=1e-12)
    objs = V.vgs_objectives(t.kl_std, t.kl_vis, t.kl_lang, torch.zeros_like(t.vds), mask, gamma=gamma, lam=0.0)
    assert torch.allclose(objs["std"] + objs["steer"] + objs["reg"], (1 + gamma) * objs["std"], atol=1e-10)


@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_blind_teacher_targets_the_students_own_text_prior(seed):
    """Q = Qt: VDS = 0 and Q* = Pt, so KLvis = KL(P || Pt): VGS then pulls the student toward
    ignoring the image; it does not reduce to standard distillation (docs/methods/vgs.md §7.3)."""
    zs, zst, zt, _, mask = logits4(seed)
    t = vgs_terms(zs, zst, zt, zt.clone(), mask)
    assert torch.allclose(t.vds, torch.zeros_like(t.vds), atol=1e-12)
    m = mask.to(zs.dtype)
    assert torch.allclose(t.kl_vis, kl(zs.log_softmax(-1), zst.log_softmax(-1)) * m, atol=1e-10)
    assert not torch.allclose(t.kl_vis, t.kl_std, atol=1e-3)


@SETTINGS
@given(seed=st.integers(0, 10_000), c=st.floats(-5, 5))
def test_visual_loss_vanishes_when_information_gains_agree(seed, c):
    _, zst, zt, ztt, mask = logits4(seed)
    # student multimodal logits = text logits + the teacher's visual gain + a constant
    zs = (zst.detach().log_softmax(-1) + zt.log_softmax(-1) - ztt.log_softmax(-1) + c).requires_grad_(True)
    t = vgs_terms(zs, zst, zt, ztt, mask)
    assert torch.allclose(t.kl_vis, torch.zeros_like(t.kl_vis), atol=1e-10)
    # and any other student gain makes it positive
    t2 = vgs_terms(zs + torch.randn_like(zs), zst, zt, ztt, mask)
    assert bool((t2.kl_vis[mask != 0] > 0).all())


@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_decomposition_identity_and_non_negativity(seed):
    zs, zst, zt, ztt, mask = logits4(seed)
    t = vgs_terms(zs, zst, zt, ztt, mask)
    lp, lpt, lqt = zs.detach().log_softmax(-1), zst.detach().log_softmax(-1), ztt.log_softmax(-1)
    log_z = torch.logsumexp(lpt + zt.log_softmax(-1) - lqt, -1)
    ident = t.kl_std - (lp.exp() * (lpt - lqt)).sum(-1) + log_z
    assert torch.allclose(t.kl_vis, ident * mask, atol=1e-10)  # §7 item 6
    for x in t:
        assert bool((x.detach() >= -1e-12).all())


# ---------------------------------------------------------------- reductions (item 8)

@SETTINGS
@given(seed=st.integers(0, 10_000), agg=st.sampled_from(["token-mean", "seq-mean-token-mean"]))
def test_gamma_and_lambda_zero_is_standard_opd_in_value_and_gradient(seed, agg):
    zs, zst, zt, ztt, mask = logits4(seed)
    t = vgs_terms(zs, zst, zt, ztt, mask)
    reg = V.above(t.vds, mask, float(V.vds_quantiles(t.vds, mask, (0.7,))[0]))
    objs = V.vgs_objectives(t.kl_std, t.kl_vis, t.kl_lang, reg, mask, gamma=0.0, lam=0.0, agg=agg)
    total = sum(objs.values())
    ref, _ = gkd_loss(zs, zt, mask, "full-rkl", agg=agg)  # methods.opd's standard OPD
    assert torch.allclose(total, ref, atol=1e-12)
    g1 = torch.autograd.grad(total, (zs, zst), allow_unused=True)
    g2 = torch.autograd.grad(ref, (zs,))
    assert torch.allclose(g1[0], g2[0], atol=1e-12)
    assert g1[1] is None or torch.count_nonzero(g1[1]) == 0
    assert V.eta_exact([g1[0]], [torch.zeros_like(g1[0])]) == 1.0  # eta(0) = 1


@SETTINGS
@given(seed=st.integers(0, 10_000), gamma=st.floats(0.1, 4.0), lam=st.floats(0.0, 1.0))
def test_lambda_zero_gives_vgs_and_parts_sum_to_eq17(seed, gamma, lam):
    zs, zst, zt, ztt, mask = logits4(seed)
    t = vgs_terms(zs, zst, zt, ztt, mask)
    reg = V.above(t.vds, mask, float(V.vds_quantiles(t.vds, mask, (0.7,))[0]))
    agg = "seq-mean-token-mean"
    objs = V.vgs_objectives(t.kl_std, t.kl_vis, t.kl_lang, reg, mask, gamma=gamma, lam=lam, agg=agg)
    A = lambda x: losses.agg_loss(x, mask, agg)  # noqa: E731
    assert torch.allclose(sum(objs.values()), A(t.kl_std) + gamma * A(t.kl_vis) + lam * A(reg * t.kl_lang), atol=1e-12)
    objs0 = V.vgs_objectives(t.kl_std, t.kl_vis, t.kl_lang, reg, mask, gamma=gamma, lam=0.0, agg=agg)
    assert float(objs0["reg"]) == 0.0
    # Lang-steer (Eq. 19) with the literal VP form uses the text-only student against Q*
    ls = V.vgs_objectives(t.kl_std, t.kl_vis, t.kl_lang, reg, mask, gamma=gamma, lam=lam, steer="language",
                          kl_vp=t.kl_vp_txt, agg=agg)
    assert torch.allclose(ls["steer"], gamma * A(t.kl_lang)) and torch.allclose(ls["reg"], lam * A(reg * t.kl_vp_txt))


@SETTINGS
@given(seed=st.integers(0, 10_000), alpha=st.floats(0.0, 1.0))
def test_grpo_mix_is_affine_in_alpha_with_the_right_end_points(seed, alpha):
    g = torch.Generator().manual_seed(seed)
    pg, d = torch.randn(2, generator=g, dtype=torch.float64)
    assert V.mix_grpo(pg, d, 0.0) == pg and V.mix_grpo(pg, d, 1.0) == d
    assert torch.allclose(V.mix_grpo(pg, d, alpha), pg + alpha * (d - pg))
    with pytest.raises(ValueError):
        V.mix_grpo(pg, d, 1.5)


# ---------------------------------------------------------------- masks (item 9)

@SETTINGS
@given(seed=st.integers(0, 10_000), q=st.sampled_from([0.4, 0.7]))
def test_lp_mask_keeps_tokens_strictly_above_the_percentile(seed, q):
    zs, zst, zt, ztt, mask = logits4(seed)
    t = vgs_terms(zs, zst, zt, ztt, mask)
    (thr,) = V.vds_quantiles(t.vds, mask, (q,))
    assert float(thr) == pytest.approx(float(torch.quantile(t.vds[mask != 0], q)), abs=1e-12)
    sel = V.above(t.vds, mask, float(thr))
    valid = t.vds[mask != 0]
    assert int(sel.sum()) == int((valid > thr).sum())
    n = valid.numel()
    assert abs(int(sel.sum()) - (1 - q) * n) <= 1.0 + 1e-9  # ~30% for distinct values
    assert bool((sel[mask == 0] == 0).all())
    l_lp = losses.agg_loss(sel * t.kl_lang, mask, "seq-mean-token-mean")
    l_lang = losses.agg_loss(t.kl_lang, mask, "seq-mean-token-mean")
    assert 0 <= float(l_lp.detach()) <= float(l_lang.detach()) + 1e-12


def test_lp_gradient_touches_only_the_selected_tokens():
    zs, zst, zt, ztt, mask = logits4(11)
    t = vgs_terms(zs, zst, zt, ztt, mask)
    sel = V.above(t.vds, mask, float(V.vds_quantiles(t.vds, mask, (0.7,))[0]))
    objs = V.vgs_objectives(t.kl_std, t.kl_vis, t.kl_lang, sel, mask, gamma=0.0, lam=1.0)
    (g,) = torch.autograd.grad(objs["reg"], zst)
    touched = g.abs().sum(-1) > 0
    assert torch.equal(touched, sel.bool())
    t = vgs_terms(zs, zst, zt, ztt, mask)
    objs = V.vgs_objectives(t.kl_std, t.kl_vis, t.kl_lang, sel, mask, gamma=0.0, lam=1.0, steer="language")
    (g,) = torch.autograd.grad(objs["reg"], zs)  # VP acts on the multimodal student, same tokens
    assert torch.equal(g.abs().sum(-1) > 0, sel.bool())


@SETTINGS
@given(seed=st.integers(0, 10_000), gamma=st.floats(0.1, 4.0))
def test_adaptive_gamma_levels_and_monotone_in_vds(seed, gamma):
    zs, zst, zt, ztt, mask = logits4(seed)
    t = vgs_terms(zs, zst, zt, ztt, mask)
    lo, hi = (float(x) for x in V.vds_quantiles(t.vds, mask, (0.4, 0.7)))
    gt = V.adaptive_gamma(t.vds, mask, gamma, lo, hi)
    v, g = t.vds[mask != 0], gt[mask != 0]
    assert set(g.tolist()) <= {0.0, gamma / 2, gamma}
    order = torch.argsort(v)
    assert bool((g[order].diff() >= 0).all())
    assert bool((gt[mask == 0] == 0).all())
    # all tokens at the top level: adaptive = fixed-gamma VGS
    full = V.vgs_objectives(t.kl_std, t.kl_vis, t.kl_lang, torch.zeros_like(t.vds), mask, gamma=gamma, lam=0.0,
                            gamma_t=gamma * (mask != 0).double())
    fixed = V.vgs_objectives(t.kl_std, t.kl_vis, t.kl_lang, torch.zeros_like(t.vds), mask, gamma=gamma, lam=0.0)
    assert torch.allclose(full["steer"], fixed["steer"], atol=1e-12)


# ---------------------------------------------------------------- gradient geometry (item 10)

def _vecs(seed: int, n: int = 3):
    g = torch.Generator().manual_seed(seed)
    s = [torch.randn(4, generator=g, dtype=torch.float64), torch.randn(2, 3, generator=g, dtype=torch.float64), None]
    v = [torch.randn(4, generator=g, dtype=torch.float64), None, torch.randn(5, generator=g, dtype=torch.float64)]
    return s, v


def _flat(gs):
    return torch.cat([x.reshape(-1) for x in gs])


@SETTINGS
@given(seed=st.integers(0, 10_000), gamma=st.floats(0.0, 10.0))
def test_exact_eta_preserves_the_standard_norm_and_matches_eq23(seed, gamma):
    s, v = _vecs(seed)
    steer = V.grad_add((gamma, v))
    eta = V.eta_exact(s, steer)
    u = V.steered_update(s, steer, [None] * 3, eta)
    zero = [torch.zeros(4, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)]
    fill = lambda gs: [z if x is None else x for z, x in zip(zero, gs)]  # noqa: E731
    S, Vv, U = _flat(fill(s)), _flat(fill(v)), _flat(fill(u))
    assert math.isclose(float(U.norm()), float(S.norm()), rel_tol=1e-9)  # (a)
    cos = float(S @ Vv / (S.norm() * Vv.norm()))
    assert math.isclose(eta, V.eta_from_norms(float(S.norm()), float(Vv.norm()), cos, gamma), rel_tol=1e-9)
    assert (eta < 1) == (2 * float(S @ Vv) + gamma * float(Vv @ Vv) > 0) or math.isclose(eta, 1.0)  # (b)
    vhat = Vv / Vv.norm()
    W = S + gamma * Vv
    assert torch.allclose(W - (W @ vhat) * vhat, S - (S @ vhat) * vhat, atol=1e-9)  # (c)
    assert math.isclose(float(W @ vhat), float(S @ vhat) + gamma * float(Vv.norm()), rel_tol=1e-9, abs_tol=1e-9)  # (d)
    cos_w = lambda g: float((S + g * Vv) @ vhat / (S + g * Vv).norm())  # noqa: E731
    assert cos_w(gamma + 0.5) >= cos_w(gamma) - 1e-12  # (e) non-decreasing in gamma
    assert math.isclose(V.cosine(s, v), cos, rel_tol=1e-9, abs_tol=1e-12)


def test_fixed_eta_one_backward_equals_the_weighted_sum_of_separate_gradients():
    """§7 item 10 (g), and (a) with autograd on a tiny model: a linear student head."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(H, VOC).double()
    params = list(lin.parameters())
    g = torch.Generator().manual_seed(5)
    x, xt = torch.randn(B, T, H, generator=g, dtype=torch.float64), torch.randn(B, T, H, generator=g, dtype=torch.float64)
    zt, ztt = torch.randn(B, T, VOC, generator=g, dtype=torch.float64), torch.randn(B, T, VOC, generator=g, dtype=torch.float64)
    mask = _mask(g)

    def objs():
        t = vgs_terms(lin(x), lin(xt), zt, ztt, mask)
        reg = V.above(t.vds, mask, float(V.vds_quantiles(t.vds, mask, (0.7,))[0]))
        return V.vgs_objectives(t.kl_std, t.kl_vis, t.kl_lang, reg, mask, gamma=2.0, lam=0.5)

    eta = 0.41
    total = torch.autograd.grad(eta * sum(objs().values()), params)
    parts = {k: torch.autograd.grad(o, params, retain_graph=True) for k, o in objs().items()}
    sep = V.steered_update(parts["std"], parts["steer"], parts["reg"], eta)
    for a, b in zip(total, sep):
        assert torch.allclose(a, b, atol=1e-12)
    e = V.eta_exact(parts["std"], parts["steer"])
    u = V.steered_update(parts["std"], parts["steer"], [None, None], e)
    assert math.isclose(float(V.grad_dot(u, u)) ** 0.5, float(V.grad_dot(parts["std"], parts["std"])) ** 0.5,
                        rel_tol=1e-9)


def test_paper_eta_only_at_gamma_two():
    assert V.paper_eta("2B", 2.0) == 0.41 and V.paper_eta("4b", 2.0) == 0.36
    for bad in ((("2b", 1.0)), ("4b", 0.0), ("8b", 2.0)):
        with pytest.raises(ValueError):
            V.paper_eta(*bad)


def test_mixed_precision_sides_match_fp32():
    """A bf16 hidden state with an fp32 head (autocast forward, fp32 master weights) or the
    reverse computes like fp32, up to bf16 rounding of the hidden states."""
    g = torch.Generator().manual_seed(0)
    h = [torch.randn(B, T, H, generator=g) for _ in range(4)]
    w, wt = torch.randn(VOC, H, generator=g), torch.randn(VOC, H, generator=g)
    mask = _mask(g)
    ref = vgs_terms(*(losses.HiddenHead(x.bfloat16().float(), ww) for x, ww in zip(h, (w, w, wt, wt))), mask)
    hs = h[0].bfloat16().requires_grad_(True)
    got = vgs_terms(losses.HiddenHead(hs, w.requires_grad_(True)), losses.HiddenHead(h[1].bfloat16(), w),
                    losses.HiddenHead(h[2].bfloat16(), wt.bfloat16()), losses.HiddenHead(h[3].bfloat16(), wt.bfloat16()), mask)
    assert torch.allclose(got.kl_std, ref.kl_std, atol=0.05)
    got.kl_vis.sum().backward()
    assert hs.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.float32 and torch.isfinite(w.grad).all()
