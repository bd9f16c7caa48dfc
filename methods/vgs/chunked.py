"""The per-token quantities of VGS from four full-vocabulary distributions, in token chunks.

For every response position ``t`` (VGS, arXiv 2606.00564, §3.1-3.2; docs/methods/vgs.md §2):

    P_t  = p_S(. | tau_<t, I, x)    student, multimodal view       (gradient)
    Pt_t = p_S(. | tau_<t, x)       student, text-only view        (gradient)
    Q_t  = q_T(. | tau_<t, I, x)    teacher, multimodal view       (never a gradient)
    Qt_t = q_T(. | tau_<t, x)       teacher, text-only view        (never a gradient)
    log Q*_t = log_softmax(log Pt_t + log Q_t - log Qt_t)                          (Eq. 10)

and the five per-token values, in this column order (``TERMS``):

    kl_std     KL(P_t  || Q_t)       Eq. 3
    kl_lang    KL(Pt_t || Qt_t)      Eq. 6
    kl_vis     KL(P_t  || Q*_t)      Eq. 11
    vds        KL(Q_t  || Qt_t)      Eq. 12  (teacher only)
    kl_vp_txt  KL(Pt_t || Q*_t)      Eq. 21 as printed (the student conditioned on x only)

Each side is logits ``(B, T, V)`` or a ``harness.losses.HiddenHead`` (hidden states and an
lm_head weight; the student's two views share one weight, the teacher's one another). One
autograd function evaluates all five over the valid tokens, ``chunk_size`` at a time, and keeps
no ``N x V`` tensor: backward recomputes a chunk's logits and applies the closed-form logit
gradients (``d KL(P||R)/dz_P = P (log P - log R - KL)`` for a fixed R; VGS docs §7 item 11):

    d kl_std  / dz_P  = P (log P - log Q - kl_std)
    d kl_vis  / dz_P  = P (log P - log Q* - kl_vis)
    d kl_vis  / dz_Pt = Q* - P                       only when Q* is not detached (G1 switch)
    d kl_lang / dz_Pt = Pt (log Pt - log Qt - kl_lang)
    d kl_vp_txt / dz_Pt = Pt (log Pt - log Q* - kl_vp_txt)  [+ (Q* - Pt) when Q* is not detached]

(``Q*`` depends on ``z_Pt`` through a softmax of ``log Pt + const``: ``d(-sum_v a_v log Q*_v)/dz_Pt
= Q* sum(a) - a`` for a distribution ``a``.) ``vds`` has no gradient.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from harness.losses import Side, _flatten as _flat  # one reading of a side (logits or hidden + head)

TERMS = ("kl_std", "kl_lang", "kl_vis", "vds", "kl_vp_txt")


class VGSTerms(NamedTuple):
    """Per-token values (B, T), 0 outside the mask (see the module docstring)."""

    kl_std: Tensor
    kl_lang: Tensor
    kl_vis: Tensor
    vds: Tensor
    kl_vp_txt: Tensor


def _logits(x: Tensor, w: Optional[Tensor], rows: Tensor, dtype: torch.dtype) -> Tensor:
    """Logits of the given rows: x[rows], or x[rows] @ w.T in the wider of the two dtypes (an fp32
    hidden state with a bf16 head, or the reverse, is not an error); upcast to ``dtype``."""
    xr = x.index_select(0, rows)
    if w is None:
        return xr.to(dtype)
    mm = torch.promote_types(xr.dtype, w.dtype)
    return (xr.to(mm) @ w.to(mm).t()).to(dtype)


def _kl(a: Tensor, la: Tensor, lb: Tensor) -> Tensor:
    """sum_v a (log a - log b), rows; 0 * finite where a underflows to 0."""
    return (a * (la - lb)).sum(-1)


def _chunk_values(zs: Tensor, zst: Tensor, zt: Tensor, ztt: Tensor):
    lp, lpt = torch.log_softmax(zs, -1), torch.log_softmax(zst, -1)
    lq, lqt = torch.log_softmax(zt, -1), torch.log_softmax(ztt, -1)
    lqs = torch.log_softmax(lpt + lq - lqt, -1)  # Eq. 10: the evidence term is the per-row softmax constant
    p, pt = lp.exp(), lpt.exp()
    vals = torch.stack([_kl(p, lp, lq), _kl(pt, lpt, lqt), _kl(p, lp, lqs), _kl(lq.exp(), lq, lqt),
                        _kl(pt, lpt, lqs)], -1)
    return vals, (lp, lpt, lq, lqt, lqs, p, pt)


class _VGSTermsFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, chunk: int, detach_qstar: bool, rows: Tensor, s_x, s_w, st_x, st_w, t_x, t_w, tt_x, tt_w):
        dtype = torch.float64 if any(t is not None and t.dtype == torch.float64
                                     for t in (s_x, s_w, st_x, st_w, t_x, t_w, tt_x, tt_w)) else torch.float32
        out = torch.empty(rows.numel(), len(TERMS), dtype=dtype, device=s_x.device)
        for a in range(0, rows.numel(), chunk):
            r = rows[a:a + chunk]
            out[a:a + r.numel()] = _chunk_values(_logits(s_x, s_w, r, dtype), _logits(st_x, st_w, r, dtype),
                                                 _logits(t_x, t_w, r, dtype), _logits(tt_x, tt_w, r, dtype))[0]
        ctx.chunk, ctx.detach_qstar, ctx.dtype = chunk, detach_qstar, dtype
        ctx.save_for_backward(rows, s_x, s_w, st_x, st_w, t_x, t_w, tt_x, tt_w)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        rows, s_x, s_w, st_x, st_w, t_x, t_w, tt_x, tt_w = ctx.saved_tensors
        need = ctx.needs_input_grad
        gs_x = torch.zeros_like(s_x) if need[3] else None
        gs_w = torch.zeros(s_w.shape, dtype=ctx.dtype, device=s_w.device) if need[4] and s_w is not None else None
        gst_x = torch.zeros_like(st_x) if need[5] else None
        gst_w = torch.zeros(st_w.shape, dtype=ctx.dtype, device=st_w.device) if need[6] and st_w is not None else None
        want_s, want_st = gs_x is not None or gs_w is not None, gst_x is not None or gst_w is not None
        for a in range(0, rows.numel(), ctx.chunk):
            r = rows[a:a + ctx.chunk]
            zs, zst = _logits(s_x, s_w, r, ctx.dtype), _logits(st_x, st_w, r, ctx.dtype)
            vals, (lp, lpt, lq, lqt, lqs, p, pt) = _chunk_values(zs, zst, _logits(t_x, t_w, r, ctx.dtype),
                                                                 _logits(tt_x, tt_w, r, ctx.dtype))
            g = grad_out[a:a + r.numel()].to(ctx.dtype)
            g_std, g_lang, g_vis, g_vp = g[:, 0:1], g[:, 1:2], g[:, 2:3], g[:, 4:5]
            if want_s:
                dz = p * (g_std * (lp - lq - vals[:, 0:1]) + g_vis * (lp - lqs - vals[:, 2:3]))
                _scatter(dz, r, s_x, s_w, gs_x, gs_w)
            if want_st:
                dz = pt * (g_lang * (lpt - lqt - vals[:, 1:2]) + g_vp * (lpt - lqs - vals[:, 4:5]))
                if not ctx.detach_qstar:
                    qs = lqs.exp()
                    dz = dz + g_vis * (qs - p) + g_vp * (qs - pt)
                _scatter(dz, r, st_x, st_w, gst_x, gst_w)
        if gs_w is not None:
            gs_w = gs_w.to(s_w.dtype)
        if gst_w is not None:
            gst_w = gst_w.to(st_w.dtype)
        return None, None, None, gs_x, gs_w, gst_x, gst_w, None, None, None, None


def _scatter(dz: Tensor, r: Tensor, x: Tensor, w: Optional[Tensor], gx: Optional[Tensor], gw: Optional[Tensor]) -> None:
    """Map a chunk's logit gradient onto its side's input (logits, or hidden and weight)."""
    if w is None:
        if gx is not None:
            gx.index_add_(0, r, dz.to(gx.dtype))
        return
    mm = torch.promote_types(x.dtype, w.dtype)
    dzw = dz.to(mm)
    if gx is not None:
        gx.index_add_(0, r, (dzw @ w.to(mm)).to(gx.dtype))
    if gw is not None:
        gw += (dzw.t() @ x.index_select(0, r).to(mm)).to(gw.dtype)


def auto_chunk(vocab: int) -> int:
    """Tokens per chunk so that one (chunk, V) fp32 buffer is about 8 MiB (the kernel keeps
    about a dozen alive)."""
    return max(1, (1 << 21) // vocab)


def vgs_terms(student: Side, student_text: Side, teacher: Side, teacher_text: Side, mask: Tensor, *,
              detach_qstar: bool = True, chunk_size: Optional[int] = None) -> VGSTerms:
    """The five per-token quantities of VGS (module docstring), chunked over the valid tokens of
    ``mask`` (B, T). The teacher sides never get a gradient; ``detach_qstar`` (G1, default True)
    stops the gradient through the text-only student inside ``Q*``."""
    s_x, s_w, v, bt = _flat(student, "student", False)
    st_x, st_w, v2, bt2 = _flat(student_text, "student_text", False)
    t_x, t_w, v3, bt3 = _flat(teacher, "teacher", True)
    tt_x, tt_w, v4, bt4 = _flat(teacher_text, "teacher_text", True)
    if len({v, v2, v3, v4}) != 1 or len({bt, bt2, bt3, bt4}) != 1:
        raise ValueError(f"the four sides must share (B, T, V): {[(*bt, v), (*bt2, v2), (*bt3, v3), (*bt4, v4)]}")
    if tuple(mask.shape) != bt:
        raise ValueError(f"mask {tuple(mask.shape)} must be (B, T) = {bt}")
    chunk = chunk_size or auto_chunk(v)
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    rows = (mask.reshape(-1) != 0).nonzero().squeeze(1).to(s_x.device)
    vals = _VGSTermsFn.apply(chunk, detach_qstar, rows, s_x, s_w, st_x, st_w, t_x, t_w, tt_x, tt_w)
    out = torch.zeros(bt[0] * bt[1], len(TERMS), dtype=vals.dtype, device=vals.device).index_put((rows,), vals)
    cols = out.view(bt[0], bt[1], len(TERMS)).unbind(-1)
    return VGSTerms(cols[0], cols[1], cols[2], cols[3].detach(), cols[4])


def qstar_logprobs(student_text_logits: Tensor, teacher_logits: Tensor, teacher_text_logits: Tensor) -> Tensor:
    """``log Q*`` of Eq. 10 from logits (..., V): ``log_softmax(log Pt + log Q - log Qt)`` (small
    vocabularies, tests and diagnostics; the training path is :func:`vgs_terms`)."""
    return torch.log_softmax(torch.log_softmax(student_text_logits, -1) + torch.log_softmax(teacher_logits, -1)
                             - torch.log_softmax(teacher_text_logits, -1), -1)


__all__ = ["TERMS", "VGSTerms", "auto_chunk", "qstar_logprobs", "vgs_terms"]
