"""The compiled loss kernels (``harness.losses.KERNEL_COMPILE``: torch.compile / inductor) against
the eager ones, which stay the reference, with compilation forced on ("always") at small
vocabularies; the rule that decides; the eager fallback when compilation fails.

Tolerances (torch.testing.assert_close, |a - b| <= atol + rtol |b| elementwise), V <= 300:

- fp32 logits: values rtol = atol = 1e-5 and logit gradients (row-scaled, as the fused path
  writes them) rtol = 1e-5, atol = 1e-5 * max |dz|: the same equations in fp32, with the
  reductions over the vocabulary summed in a different order (inductor's vectorised loops vs
  ATen's) and exp/log from different vector libraries, a few fp32 ulps per term; a gradient
  element is a difference (p (l - E l), p~ (Rhat - r)) whose terms cancel, so its error scales
  with the largest terms of its row, hence the atol relative to max |dz|.
- bf16 logits: the values as fp32 (both upcast the same bf16 numbers); the logit gradient is
  rounded to bf16 on the way out, so rtol = 2**-7 (one bf16 ulp of relative spacing 2**-8 on
  either side of the rounding) and atol = 1e-5 * max |dz|.

The top-K kernels run compiled only under "always" (``auto`` leaves them eager); they are
tested compiled all the same (2-16 s each with inductor's cache; ~30 s cold under load).
- Fused end to end (hidden states and weight, bf16, the weight gradient accumulated over chunks
  into fp32 by the compiled ``_accumulate_``): loss and values rtol = atol = 1e-5, gradients
  rtol = 2e-2, atol = 2e-2 * max |grad| (bf16 logit gradients on both sides, as
  tests/test_fused_losses.py states for bf16).
"""
from __future__ import annotations

import functools
import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from harness import losses as L

SETTINGS = dict(max_examples=3, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # the fixture only sets the mode
KERNELS = {
    "rkl": lambda: L._kl_reverse_kernel,
    "fkl": lambda: L._kl_forward_kernel,
    "entropy": lambda: L._entropy_kernel,
    "jsd": lambda: L._FULL_JSD,
    "jsd-beta0.3": lambda: L._generalized_jsd_kernel(0.3),
    "topk-union": lambda: L._jsd_kernel(5, "union"),
    "topk-student": lambda: L._jsd_kernel(5, "student"),
    "topk-teacher": lambda: L._jsd_kernel(5, "teacher"),
    "teacher-topk-jsd": lambda: L._teacher_topk_jsd_kernel,
    "topk-reward": lambda: L._topk_reward_kernel(-2.0),
}
NO_TEACHER = {"entropy"}
TOPK_TEACHER = {"teacher-topk-jsd", "topk-reward"}


@pytest.fixture
def forced(monkeypatch):
    """Compilation forced on, whatever the environment says."""
    monkeypatch.delenv("VLMREPRO_COMPILE_KERNELS", raising=False)
    monkeypatch.setattr(L, "KERNEL_COMPILE", "always")


def _logits(name: str, c: int, v: int, seed: int, dtype: torch.dtype):
    """(zs, zt, scale): student logits, the teacher as logits or as a packed ``TopKTeacher`` chunk
    (ids as floats, then log q) or None, and per-row scales (token weights)."""
    g = torch.Generator().manual_seed(seed)
    zs = (torch.randn(c, v, generator=g) * 3).to(dtype)
    zt = (torch.randn(c, v, generator=g) * 3).to(dtype)
    if name in TOPK_TEACHER:
        top = torch.log_softmax(zt.float(), -1).topk(5, dim=-1)
        zt = torch.cat([top.indices.float(), top.values], -1)
    elif name in NO_TEACHER:
        zt = None
    return zs, zt, torch.rand(c, generator=g) + 0.5


def _run(run, zs, zt, scale):
    """(values, row-scaled logit gradient) of a kernel runner, on copies of the inputs."""
    zs = zs.clone()
    val = run(torch.float32, zs, None if zt is None else zt.clone(), scale)
    return val, zs


@pytest.mark.parametrize("name", list(KERNELS))
@settings(**SETTINGS)
@given(c=st.integers(2, 9), v=st.sampled_from([37, 300]), seed=st.integers(0, 2**16),
       bf16=st.booleans())
def test_compiled_kernel_matches_eager(forced, name, c, v, seed, bf16):
    kernel = KERNELS[name]()
    dtype = torch.bfloat16 if bf16 else torch.float32
    zs, zt, scale = _logits(name, c, v, seed, dtype)
    run = L._kernel_runner(kernel, v)
    assert not isinstance(run, functools.partial)  # the compiled runner, not the eager partial
    eager = lambda *a: L._apply_kernel(kernel, *a)
    val_c, dz_c = _run(run, zs, zt, scale)
    val_e, dz_e = _run(eager, zs, zt, scale)
    torch.testing.assert_close(val_c, val_e, rtol=1e-5, atol=1e-5)
    assert dz_c.dtype == dtype  # written in the logits' dtype
    torch.testing.assert_close(dz_c.float(), dz_e.float(), rtol=2.0**-7 if bf16 else 1e-5,
                               atol=1e-5 * float(dz_e.float().abs().max()))


def test_compiled_values_only_leave_the_logits(forced):
    """Without a scale (the reference path's forward) the compiled kernel returns the same values
    and leaves both logit buffers as they were (its in-place steps work on copies)."""
    zs, zt, _ = _logits("rkl", 5, 50, 7, torch.float32)
    zs2, zt2 = zs.clone(), zt.clone()
    val = L._kernel_runner(L._kl_reverse_kernel, 50)(torch.float32, zs2, zt2, None)
    torch.testing.assert_close(val, L._apply_kernel(L._kl_reverse_kernel, torch.float32, zs.clone(), zt.clone(), None),
                               rtol=1e-5, atol=1e-5)
    assert torch.equal(zs2, zs) and torch.equal(zt2, zt)


def test_compiled_topk_union_support_and_tail(forced):
    """Top-K JSD with k large enough that the two top-k sets overlap (duplicates in the union)
    and with k = V (no tail: equal to the full JSD), compiled vs eager and vs the full JSD."""
    zs, zt, scale = _logits("jsd", 4, 12, 3, torch.float32)
    zt[:, :6] = zs[:, :6] + 0.01  # shared top ids: the union holds duplicates
    for k, close_to_full in ((6, False), (12, True)):
        kernel = L._jsd_kernel(k, "union")
        val_c, dz_c = _run(L._kernel_runner(kernel, 12), zs, zt, scale)
        val_e, dz_e = _run(lambda *a: L._apply_kernel(kernel, *a), zs, zt, scale)
        torch.testing.assert_close(val_c, val_e, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(dz_c, dz_e, rtol=1e-5, atol=1e-5 * float(dz_e.abs().max()))
        if close_to_full:
            val_f, dz_f = _run(lambda *a: L._apply_kernel(L._FULL_JSD, *a), zs, zt, scale)
            torch.testing.assert_close(val_c, val_f, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(dz_c, dz_f, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("loss", ["rkl", "jsd", "topk"])
def test_fused_path_compiled_matches_eager_bf16(monkeypatch, loss):
    """The whole fused path (hidden states, bf16; several chunks) compiled vs eager, including the
    weight gradient's compiled bf16 -> fp32 accumulation."""
    monkeypatch.delenv("VLMREPRO_COMPILE_KERNELS", raising=False)
    g = torch.Generator().manual_seed(1)
    b, t, h, v = 2, 7, 16, 300
    mk = lambda *s, sc=1.0: (torch.randn(*s, generator=g) * sc).to(torch.bfloat16)
    hid0, w0 = mk(b, t, h), mk(v, h, sc=2 / math.sqrt(h))
    ht, wt = mk(b, t, h), mk(v, h, sc=2 / math.sqrt(h))
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, 5:] = 0
    out = {}
    for mode in ("never", "always"):
        monkeypatch.setattr(L, "KERNEL_COMPILE", mode)
        hid, w = hid0.clone().requires_grad_(), w0.clone().requires_grad_()
        s, te, tw = L.HiddenHead(hid, w), L.HiddenHead(ht, wt), L.agg_weights(mask)
        if loss == "rkl":
            f = L.full_kl(s, te, mask, "reverse", 4, token_weights=tw)
        elif loss == "jsd":
            f = L.jsd(s, te, mask, 4, token_weights=tw)
        else:
            f = L.topk_jsd(s, te, mask, k=5, chunk_size=4, token_weights=tw)
        f.loss.backward()
        out[mode] = (f.loss.detach(), f.values, hid.grad.float(), w.grad.float())
    (l0, v0, gh0, gw0), (l1, v1, gh1, gw1) = out["never"], out["always"]
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v1, v0, rtol=1e-5, atol=1e-5)
    for a, e in ((gh1, gh0), (gw1, gw0)):
        torch.testing.assert_close(a, e, rtol=2e-2, atol=2e-2 * float(e.abs().max()))


def test_accumulate_compiled_matches_eager(forced):
    dst = torch.randn(50, 8)
    src = torch.randn(50, 8).to(torch.bfloat16)
    acc = L._runner(L._accumulate_, L._accumulate_, 50)
    a, e = dst.clone(), dst.clone()
    acc(a, src, False)
    L._accumulate_(e, src, False)
    torch.testing.assert_close(a, e, rtol=0, atol=0)
    acc(a, src, True)
    assert torch.equal(a, src.float())


def test_compile_rule(monkeypatch):
    monkeypatch.delenv("VLMREPRO_COMPILE_KERNELS", raising=False)
    monkeypatch.setattr(L, "KERNEL_COMPILE", "auto")
    assert not L._use_compiled(1200) and L._use_compiled(151_936)
    assert L._use_compiled(L.COMPILE_MIN_VOCAB) and not L._use_compiled(L.COMPILE_MIN_VOCAB - 1)
    monkeypatch.setenv("VLMREPRO_COMPILE_KERNELS", "never")
    assert not L._use_compiled(151_936)
    assert L._kernel_runner(L._kl_reverse_kernel, 151_936).func is L._apply_kernel  # the eager partial
    monkeypatch.setenv("VLMREPRO_COMPILE_KERNELS", "always")
    assert L._use_compiled(10)
    monkeypatch.setenv("VLMREPRO_COMPILE_KERNELS", "sometimes")
    with pytest.raises(ValueError, match="VLMREPRO_COMPILE_KERNELS"):
        L._use_compiled(10)


def test_failed_compile_falls_back_to_eager_with_one_warning(monkeypatch):
    """Under auto a compiler failure warns once and the result is the eager one; under always it
    raises."""
    def broken(fn, **kw):
        def run(*a):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.delenv("VLMREPRO_COMPILE_KERNELS", raising=False)
    monkeypatch.setattr(L, "KERNEL_COMPILE", "auto")
    monkeypatch.setattr(L, "COMPILE_MIN_VOCAB", 10)
    monkeypatch.setattr(L, "_COMPILED", {})
    monkeypatch.setattr(L, "_COMPILE_BROKEN", [])
    monkeypatch.setattr(torch, "compile", broken)
    zs, zt, scale = _logits("rkl", 3, 40, 0, torch.float32)
    eager = _run(lambda *a: L._apply_kernel(L._kl_reverse_kernel, *a), zs, zt, scale)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        got = _run(L._kernel_runner(L._kl_reverse_kernel, 40), zs, zt, scale)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second failure is silent, and no longer tried
        again = _run(L._kernel_runner(L._kl_forward_kernel, 40), zs, zt, scale)
    assert not L._use_compiled(40)
    for a, e in zip(got, eager):
        assert torch.equal(a, e)
    assert again[0].shape == (3,)
    monkeypatch.setattr(L, "KERNEL_COMPILE", "always")
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        _run(L._kernel_runner(L._entropy_kernel, 40), zs, None, scale)
