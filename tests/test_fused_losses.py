"""The fused full-vocabulary losses (``token_weights=...`` -> ``FusedLoss``) against the reference
chunked path and a naive full-logits autograd implementation (harness/losses.py).

Tolerances (torch.testing.assert_close, |a - b| <= atol + rtol |b| elementwise):

- fp32, fused vs reference: rtol = atol = 1e-6 for the loss, the per-token values and the
  gradients with respect to hidden and weight (the two paths run the same kernels and the
  same in-place accumulations; only where the token weight and the incoming gradient multiply
  the logit gradient differs).
- float64, fused vs naive full-logits autograd: rtol = atol = 1e-9 (independent
  implementations; float64 so that the comparison checks the closed-form gradients, not fp32
  rounding); fp32 fused vs float64 naive: rtol = atol = 1e-5.
- bf16 (hidden and weight in bf16, logits upcast to fp32), fused vs reference: values and loss
  rtol = atol = 1e-5 (both compute the same bf16 matmuls and the same fp32 kernels); gradients
  rtol = 2e-2, atol = 2e-2 * max |grad|: the logit gradient is rounded to bf16 (8 significant
  bits, a relative spacing of 2**-8 = 3.9e-3) before it meets the weight matrix, and the two
  paths apply the token weight and the incoming gradient on different sides of that rounding,
  so an element can differ by a few bf16 ulps (and an element near 0 by a few ulps of the
  largest terms that cancel in it).
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from harness import losses as L

LOSSES = ("rkl", "fkl", "jsd", "jsd-beta0.3", "topk-union", "topk-student", "topk-teacher", "entropy",
          "teacher-topk-jsd", "topk-reward")
AGGS = L.AGG_MODES
SETTINGS = dict(max_examples=6, deadline=None, derandomize=True)


def _call(name: str, student, teacher, mask, chunk, k: int, **kw):
    """The harness loss called ``name`` (per-token values, or FusedLoss with token_weights)."""
    if name == "rkl":
        return L.full_kl(student, teacher, mask, "reverse", chunk, **kw)
    if name == "fkl":
        return L.full_kl(student, teacher, mask, "forward", chunk, **kw)
    if name == "jsd":
        return L.jsd(student, teacher, mask, chunk, **kw)
    if name == "jsd-beta0.3":
        return L.jsd(student, teacher, mask, chunk, beta=0.3, **kw)
    if name.startswith("topk-") and name != "topk-reward":
        return L.topk_jsd(student, teacher, mask, k=k, chunk_size=chunk, support=name[5:], **kw)
    if name == "entropy":
        return L.entropy(student, mask, chunk, **kw)
    top = L.teacher_topk(teacher, mask, k)
    if name == "teacher-topk-jsd":
        return L.teacher_topk_jsd(student, top, mask, chunk, **kw)
    return L.topk_expected_reward(student, top, mask, -2.0, chunk, **kw)


def _inputs(seed: int, b: int, t: int, h: int, v: int, dtype: torch.dtype, masked: float):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s, scale=1.0: (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(dtype)
    hid = mk(b, t, h).requires_grad_()
    w = mk(v, h, scale=2.0 / math.sqrt(h)).requires_grad_()
    ht, wt = mk(b, t, h), mk(v, h, scale=2.0 / math.sqrt(h))
    mask = (torch.rand(b, t, generator=g) >= masked).long()
    return hid, w, ht, wt, mask


def _glob(agg: str, mask: torch.Tensor, extra: float) -> dict:
    """Aggregation keywords: the global counts of a larger batch (this one plus ``extra``)."""
    kw: dict = {"max_len": mask.shape[1] + 3} if agg == "seq-mean-token-sum-norm" else {}
    if extra:
        kw["global_tokens"] = float(mask.sum()) + extra
        kw["global_seqs"] = float((mask.sum(-1) > 0).sum()) + extra
    return kw


def _both(name, hid, w, ht, wt, mask, chunk, k, agg, glob, scale):
    """(reference loss, values, grads) and (fused loss, values, grads) of ``scale * loss``."""
    s, t = L.HiddenHead(hid, w), L.HiddenHead(ht, wt)
    per = _call(name, s, t, mask, chunk, k)
    ref = L.agg_loss(per, mask, agg, **glob)
    ref_g = torch.autograd.grad(scale * ref, (hid, w), allow_unused=True)
    fused = _call(name, s, t, mask, chunk, k, token_weights=L.agg_weights(mask, agg, **glob))
    assert isinstance(fused, L.FusedLoss) and fused.loss.dim() == 0 and not fused.values.requires_grad
    fus_g = torch.autograd.grad(scale * fused.loss, (hid, w), allow_unused=True)
    return (ref, per.detach(), ref_g), (fused.loss, fused.values, fus_g)


sizes = st.tuples(st.integers(1, 3), st.integers(1, 7), st.integers(2, 12), st.integers(3, 40))


@pytest.mark.parametrize("name", LOSSES)
@settings(**SETTINGS)
@given(seed=st.integers(0, 2**16), size=sizes, chunk=st.integers(1, 5), k=st.integers(1, 8),
       agg=st.sampled_from(AGGS), masked=st.sampled_from([0.0, 0.3, 0.7]), extra=st.sampled_from([0.0, 5.0]),
       scale=st.sampled_from([1.0, 0.37, -2.5]))
def test_fused_equals_reference_fp32(name, seed, size, chunk, k, agg, masked, extra, scale):
    hid, w, ht, wt, mask = _inputs(seed, *size, torch.float32, masked)
    glob = _glob(agg, mask, extra)
    (rl, rv, rg), (fl, fv, fg) = _both(name, hid, w, ht, wt, mask, chunk, k, agg, glob, scale)
    tol = dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fl, rl, **tol)
    torch.testing.assert_close(fv, rv, **tol)
    for a, b in zip(fg, rg):
        torch.testing.assert_close(a, b, **tol)


def _naive_jsd(a: torch.Tensor, b: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """beta KL(b || m) + (1 - beta) KL(a || m), m = beta b + (1 - beta) a, over the last dim
    (a student, b teacher; 0 log 0 = 0 with finite gradients)."""
    tiny = torch.finfo(a.dtype).tiny
    m = beta * b + (1 - beta) * a
    kl = lambda x: torch.where(x > 0, x * (x.clamp_min(tiny).log() - m.clamp_min(tiny).log()), 0.0).sum(-1)
    return beta * kl(b) + (1 - beta) * kl(a)


def _naive(name: str, zs: torch.Tensor, zt: torch.Tensor, k: int) -> torch.Tensor:
    """Per-token values from full logits zs (N, V) (with grad) and zt (N, V) (no grad), by plain
    autograd: the equations of the docstrings, written independently of the kernels."""
    lp, lq = zs.log_softmax(-1), zt.log_softmax(-1)
    p, q = lp.exp(), lq.exp()
    if name == "rkl":
        return (p * (lp - lq)).sum(-1)
    if name == "fkl":
        return (q * (lq - lp)).sum(-1)
    if name == "jsd":
        return _naive_jsd(p, q)
    if name == "jsd-beta0.3":
        return _naive_jsd(p, q, 0.3)
    if name == "entropy":
        return -(p * lp).sum(-1)
    kk = min(k, zs.shape[-1])
    if name.startswith("topk-") and name != "topk-reward":  # [PTD-PO] Eqs. 14-17, support S
        support = name[5:]
        in_s = torch.zeros_like(zs, dtype=torch.bool)
        if support in ("union", "student"):
            in_s.scatter_(1, zs.detach().topk(kk, -1).indices, True)
        if support in ("union", "teacher"):
            in_s.scatter_(1, zt.topk(kk, -1).indices, True)
        comp = lambda x: torch.cat([torch.where(in_s, x, 0.0), torch.where(in_s, 0.0, x).sum(-1, keepdim=True)], -1)
        return _naive_jsd(comp(p), comp(q))
    ids = zt.topk(kk, -1).indices  # the teacher's top-k (TopKTeacher)
    p_s, q_s = p.gather(1, ids), q.gather(1, ids)
    if name == "teacher-topk-jsd":
        tail = lambda x_s: (1.0 - x_s.sum(-1, keepdim=True)).clamp_min(0.0)
        return _naive_jsd(torch.cat([p_s, tail(p_s)], -1), torch.cat([q_s, tail(q_s)], -1))
    # topk-reward: REOPOLD's floored reward on S, both renormalised, reward held constant
    lpt = p_s.log() - p_s.sum(-1, keepdim=True).log()
    lqt = q_s.log() - q_s.sum(-1, keepdim=True).log()
    return (lpt.exp() * (lqt - lpt).clamp_min(-2.0).detach()).sum(-1)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@settings(**SETTINGS)
@given(seed=st.integers(0, 2**16), size=sizes, chunk=st.integers(1, 5), k=st.integers(1, 8),
       agg=st.sampled_from(AGGS), masked=st.sampled_from([0.0, 0.4]))
def test_fused_equals_naive_full_logits(name, dtype, seed, size, chunk, k, agg, masked):
    hid, w, ht, wt, mask = _inputs(seed, *size, dtype, masked)
    glob = _glob(agg, mask, 0.0)
    fused = _call(name, L.HiddenHead(hid, w), L.HiddenHead(ht, wt), mask, chunk, k,
                  token_weights=L.agg_weights(mask, agg, **glob))
    fg = torch.autograd.grad(fused.loss, (hid, w))
    h64, w64 = hid.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    zs = (h64 @ w64.t()).reshape(-1, w.shape[0])
    zt = (ht.double() @ wt.double().t()).reshape(-1, w.shape[0])
    vals = _naive(name, zs, zt, k).reshape(mask.shape)
    nl = L.agg_loss(vals, mask, agg, **glob)
    ng = torch.autograd.grad(nl, (h64, w64)) if nl.requires_grad else (torch.zeros_like(h64), torch.zeros_like(w64))
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.loss.double(), nl.detach(), **tol)
    torch.testing.assert_close(fused.values.double(), torch.where(mask != 0, vals.detach(), 0.0), **tol)
    for a, b in zip(fg, ng):
        torch.testing.assert_close(a.double(), b, **tol)


@pytest.mark.parametrize("name", LOSSES)
@settings(max_examples=6, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), size=sizes, chunk=st.integers(1, 5), agg=st.sampled_from(AGGS),
       scale=st.sampled_from([1.0, 0.37]))
def test_fused_equals_reference_bf16(name, seed, size, chunk, agg, scale):
    hid, w, ht, wt, mask = _inputs(seed, *size, torch.bfloat16, 0.3)
    glob = _glob(agg, mask, 0.0)
    (rl, rv, rg), (fl, fv, fg) = _both(name, hid, w, ht, wt, mask, chunk, 4, agg, glob, scale)
    assert fv.dtype == torch.float32 and fg[0].dtype == fg[1].dtype == torch.bfloat16
    torch.testing.assert_close(fl, rl, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fv, rv, rtol=1e-5, atol=1e-5)
    for a, b in zip(fg, rg):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2 * float(b.float().abs().max()) + 1e-12)


@pytest.mark.parametrize("name", LOSSES)
def test_all_masked_gives_zero_loss_and_zero_grads(name):
    hid, w, ht, wt, _ = _inputs(0, 2, 5, 6, 17, torch.float32, 0.0)
    mask = torch.zeros(2, 5, dtype=torch.long)
    fused = _call(name, L.HiddenHead(hid, w), L.HiddenHead(ht, wt), mask, 3, 4, token_weights=L.agg_weights(mask))
    assert float(fused.loss.detach()) == 0.0 and not fused.values.any()
    gh, gw = torch.autograd.grad(3.0 * fused.loss, (hid, w))
    assert not gh.any() and not gw.any()


def test_fused_student_logits_and_no_grad():
    """A logits student gets the logit gradient; without grad mode no gradient is computed."""
    hid, w, ht, wt, mask = _inputs(1, 2, 6, 5, 23, torch.float64, 0.3)
    zs = (hid.detach() @ w.detach().t()).requires_grad_()
    zt = ht @ wt.t()
    weights = L.agg_weights(mask, "seq-mean-token-mean")
    per = L.jsd(zs, zt, mask, 4)
    (ref_g,) = torch.autograd.grad(L.agg_loss(per, mask, "seq-mean-token-mean"), zs)
    fused = L.jsd(zs, zt, mask, 4, token_weights=weights)
    (fus_g,) = torch.autograd.grad(fused.loss, zs)
    torch.testing.assert_close(fus_g, ref_g, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        quiet = L.full_kl(L.HiddenHead(hid, w), L.HiddenHead(ht, wt), mask, token_weights=weights)
    assert not quiet.loss.requires_grad
    torch.testing.assert_close(quiet.values, L.full_kl(L.HiddenHead(hid, w), L.HiddenHead(ht, wt), mask).detach())


def test_frozen_weight_gets_no_gradient_and_backward_runs_once():
    hid, w, ht, wt, mask = _inputs(2, 2, 4, 5, 19, torch.float32, 0.0)
    fused = L.full_kl(L.HiddenHead(hid, w.detach()), L.HiddenHead(ht, wt), mask, token_weights=L.agg_weights(mask))
    fused.loss.backward(retain_graph=True)
    assert hid.grad is not None and w.grad is None
    with pytest.raises(RuntimeError, match="runs once"):
        fused.loss.backward()


def test_token_weights_shape_is_checked():
    hid, w, ht, wt, mask = _inputs(3, 2, 4, 5, 19, torch.float32, 0.0)
    with pytest.raises(ValueError, match="token_weights"):
        L.full_kl(L.HiddenHead(hid, w), L.HiddenHead(ht, wt), mask, token_weights=torch.ones(2, 3))


@settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), b=st.integers(1, 4), t=st.integers(1, 6), agg=st.sampled_from(AGGS),
       extra=st.sampled_from([0.0, 3.0]), weighted=st.booleans())
def test_agg_weights_reproduce_agg_loss(seed, b, t, agg, extra, weighted):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, generator=g, dtype=torch.float64)
    mask = (torch.rand(b, t, generator=g) > 0.4).double()
    if weighted:
        mask = mask * torch.rand(b, t, generator=g, dtype=torch.float64)
    glob = _glob(agg, mask, extra)
    w = L.agg_weights(mask, agg, **glob)
    torch.testing.assert_close((w * x).sum(), L.agg_loss(x, mask, agg, **glob), rtol=1e-12, atol=1e-12)
    assert not w[mask == 0].any()


def test_chunk_budget_is_one_setting():
    assert L._auto_chunk(151_936) == L.CHUNK_BYTES // (4 * 151_936) == 220
    assert L._auto_chunk(10**12) == 1


@pytest.mark.parametrize("name", LOSSES)
def test_small_budget_blocks_the_kernels(name, monkeypatch):
    """With a tiny CHUNK_BYTES the automatic chunk is a few tokens and the kernels run on blocks
    of one row: the fused and reference paths still equal the one-block result."""
    hid, w, ht, wt, mask = _inputs(4, 2, 7, 6, 32, torch.float64, 0.2)
    agg, glob = "seq-mean-token-mean", {}
    (rl, rv, rg), (fl, fv, fg) = _both(name, hid, w, ht, wt, mask, 100, 3, agg, glob, 1.0)
    monkeypatch.setattr(L, "CHUNK_BYTES", 4 * 32 * 5)  # 5 tokens a chunk, kernel blocks of 1 row
    assert L._auto_chunk(32) == 5 and L._kernel_rows(32) == 1
    (sl, sv, sg), (gl, gv, gg) = _both(name, hid, w, ht, wt, mask, None, 3, agg, glob, 1.0)
    for a, b in [(sl, rl), (sv, rv), (gl, fl), (gv, fv), *zip(sg, rg), *zip(gg, fg)]:
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
