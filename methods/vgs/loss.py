"""VGS objectives as pure functions (arXiv 2606.00564; docs/methods/vgs.md).

Token level (from :func:`methods.vgs.chunked.vgs_terms`): ``kl_std`` (Eq. 3), ``kl_lang``
(Eq. 6), ``kl_vis`` against the visual target ``Q*`` (Eqs. 10-11), ``vds`` (Eq. 12).

Sequence level, each aggregated by ``harness.losses.agg_loss`` (default ``seq-mean-token-mean``:
the paper's ``1/|tau|`` per trajectory, then the mean over trajectories; G3):

    L_Standard, L_Lang, L_Vis                              Eqs. 4, 7, 11
    L_LP  = agg(1[VDS > Q_0.7] kl_lang)                    Eq. 16
    L_VP  = agg(1[VDS > Q_0.7] kl_vis)                     Eq. 21 as intended (G10; ``vp_form="literal"``: kl_vp_txt)
    l_VGS-LP = L_Standard + gamma L_Vis + lambda L_LP     Eq. 17 (the method; Eq. 13 with lambda = 0)
    l_Lang-Steer = L_Standard + gamma L_Lang + lambda L_VP Eq. 19 (the ablation of §7)
    l_Adaptive   = agg(kl_std + gamma_t kl_vis + lambda 1[VDS > Q_0.7] kl_lang)   Eqs. 24-25 (App. E)
    loss = eta(gamma) l                                    Eqs. 14 / 18 / 19
    J_Total = (1 - alpha) O_GRPO - alpha l                 Eq. 22 (maximised; here its negative is minimised)

Gradient level (the step's full-batch, rank-reduced gradients, as ``OnlineMethod.combine`` gets
them): ``eta_exact`` (Eq. 15 / 20 / 23), the paper's fixed constants (App. A), the steered update,
and the cosine diagnostics of §3.2 / Fig. 3.
"""
from __future__ import annotations

import math
from typing import Literal, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from harness import losses

Number = Union[int, float, Tensor, None]
Grad = Sequence[Optional[Tensor]]
"""One gradient tensor per trainable parameter (None: the objective does not reach it)."""

PAPER_ETA = {"2b": 0.41, "4b": 0.36}
"""App. A / §5.2: eta_VGS for the Qwen3-VL-2B and -4B students, measured at gamma = 2.0 only."""
PAPER_ETA_GAMMA = 2.0


# ----------------------------------------------------------------------------- token masks --

def vds_quantiles(vds: Tensor, mask: Tensor, qs: Sequence[float] = (0.4, 0.7)) -> Tensor:
    """The ``qs`` quantiles of the Visual Dependency Score over the valid tokens of ``mask``
    (linear interpolation, as ``torch.quantile``, through numpy: no 2^24-element limit); the
    population is whatever batch is passed (G4: the step's rollout batch, all ranks). With no
    valid token every threshold is +inf (nothing selected)."""
    vals = vds.detach()[mask != 0].to(torch.float64).cpu()
    if vals.numel() == 0:
        return torch.full((len(qs),), math.inf, dtype=torch.float64)
    return torch.from_numpy(np.quantile(vals.numpy(), list(qs)))


def above(vds: Tensor, mask: Tensor, threshold: float) -> Tensor:
    """``1[VDS_t > threshold]`` on valid tokens, as a float (B, T) mask (Eq. 16's indicator)."""
    return ((vds.detach() > threshold) & (mask != 0)).to(vds.dtype)


def adaptive_gamma(vds: Tensor, mask: Tensor, gamma: float, q_low: float, q_high: float) -> Tensor:
    """Eq. 25: ``gamma_t = 0`` if VDS_t <= Q_0.4, ``gamma/2`` if Q_0.4 < VDS_t <= Q_0.7, ``gamma``
    above Q_0.7; 0 outside the mask. ``q_low`` / ``q_high`` are the two thresholds."""
    if q_low > q_high:
        raise ValueError(f"q_low {q_low} must be <= q_high {q_high}")
    v = vds.detach()
    g = torch.where(v > q_high, torch.full_like(v, gamma),
                    torch.where(v > q_low, torch.full_like(v, gamma / 2), torch.zeros_like(v)))
    return g * (mask != 0).to(v.dtype)


# ----------------------------------------------------------------------------- objectives --

def vgs_objectives(kl_std: Tensor, kl_vis: Tensor, kl_lang: Tensor, reg_mask: Tensor, mask: Tensor, *,
                   gamma: float, lam: float, steer: Literal["visual", "language"] = "visual",
                   gamma_t: Optional[Tensor] = None, kl_vp: Optional[Tensor] = None,
                   agg: losses.AggMode = "seq-mean-token-mean", global_tokens: Number = None,
                   global_seqs: Number = None, max_len: Optional[int] = None) -> dict[str, Tensor]:
    """The three named parts of the steered objective, before eta (each a scalar with gradient):

    - ``std``:   L_Standard                                           (Eqs. 3-4)
    - ``steer``: gamma L_Vis (Eq. 13, ``steer="visual"``), or gamma L_Lang (Eq. 19,
      ``steer="language"``); with ``gamma_t`` (B, T) (adaptive VGS, Eq. 24) agg(gamma_t kl_vis)
    - ``reg``:   lambda L_LP = lambda agg(reg_mask kl_lang) (Eq. 16) when steering visually, or
      lambda L_VP = lambda agg(reg_mask kl_vp) (Eq. 21; ``kl_vp`` defaults to ``kl_vis``) when
      steering toward language.

    Their sum is l_VGS-LP (Eq. 17), l_Lang-Steer (Eq. 19) or l_Adaptive (Eq. 24). ``reg_mask`` is
    ``1[VDS > Q_0.7]`` (:func:`above`). Parts whose weight is 0 are exact zeros without a graph.
    """
    if gamma < 0 or lam < 0:
        raise ValueError(f"gamma and lambda must be >= 0, got {gamma}, {lam}")
    glob = dict(global_tokens=global_tokens, global_seqs=global_seqs, max_len=max_len)

    def agg_(x: Tensor) -> Tensor:
        return losses.agg_loss(x, mask, agg, **glob)

    zero = kl_std.new_zeros(())
    out = {"std": agg_(kl_std)}
    if steer == "visual":
        if gamma_t is not None:
            out["steer"] = agg_(gamma_t.detach() * kl_vis)
        else:
            out["steer"] = gamma * agg_(kl_vis) if gamma > 0 else zero
        out["reg"] = lam * agg_(reg_mask * kl_lang) if lam > 0 else zero
    elif steer == "language":
        if gamma_t is not None:
            raise ValueError("adaptive gamma_t is defined for visual steering only (App. E)")
        out["steer"] = gamma * agg_(kl_lang) if gamma > 0 else zero
        out["reg"] = lam * agg_(reg_mask * (kl_vis if kl_vp is None else kl_vp)) if lam > 0 else zero
    else:
        raise ValueError(f"unknown steer {steer!r}; expected 'visual' or 'language'")
    return out


def mix_grpo(pg_loss: Tensor, distill_loss: Tensor, alpha: float) -> Tensor:
    """Eq. 22 as a loss to minimise: ``(1 - alpha) L_GRPO + alpha l`` with ``L_GRPO = -O_GRPO``
    (the clipped surrogate as ``harness.losses.policy_loss`` returns it, no KL penalty) and ``l``
    the distillation loss (l_VGS-LP, or l_Standard for "GRPO + Standard-KD"). alpha = 0 is GRPO."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return (1.0 - alpha) * pg_loss + alpha * distill_loss


# ----------------------------------------------------------------------------- eta ----------

def paper_eta(student: str, gamma: float) -> float:
    """The fixed eta_VGS of App. A / §5.2 (0.41 for the 2B student, 0.36 for the 4B), which the
    paper measured at gamma = 2.0 only: any other gamma is an error (measure it with the exact
    eta instead, e.g. the ``eta_exact`` the diagnostics log)."""
    key = student.lower()
    if key not in PAPER_ETA:
        raise ValueError(f"no published eta for student {student!r}; known: {sorted(PAPER_ETA)}")
    if gamma != PAPER_ETA_GAMMA:
        raise ValueError(f"the paper's eta {PAPER_ETA[key]} ({key}) holds at gamma = {PAPER_ETA_GAMMA} only, "
                         f"not gamma = {gamma}; use eta_mode=exact or a measured eta_mode=fixed value")
    return PAPER_ETA[key]


def grad_dot(a: Grad, b: Grad) -> Tensor:
    """sum over parameters of <a_i, b_i> in float64 (a None is a zero gradient)."""
    total = torch.zeros((), dtype=torch.float64)
    for x, y in zip(a, b, strict=True):
        if x is not None and y is not None:
            total = total + (x.double() * y.double()).sum().cpu()
    return total


def grad_add(*terms: tuple[float, Grad]) -> list[Optional[Tensor]]:
    """sum_k c_k g_k parameter by parameter (None where no term reaches a parameter)."""
    out: list[Optional[Tensor]] = []
    for per_param in zip(*(g for _, g in terms), strict=True):
        acc = None
        for (c, _), x in zip(terms, per_param):
            if x is not None and c != 0.0:
                acc = c * x if acc is None else acc + c * x
        out.append(acc)
    return out


def eta_from_norms(s_norm: float, v_norm: float, cos_phi: float, gamma: float) -> float:
    """Eq. 23: ``||s|| / sqrt(||s||^2 + gamma^2 ||v||^2 + 2 gamma ||s|| ||v|| cos phi)`` (1 when the
    denominator is 0: nothing to rescale)."""
    den = s_norm ** 2 + gamma ** 2 * v_norm ** 2 + 2 * gamma * s_norm * v_norm * cos_phi
    return 1.0 if den <= 0 else s_norm / math.sqrt(den)


def eta_exact(g_std: Grad, g_steer: Grad) -> float:
    """Eq. 15 (Eq. 20 for language steering): ``||g_std|| / ||g_std + g_steer||`` with ``g_steer``
    the gradient of the steering part *including* its weight (gamma L_Vis). 1 if both are 0."""
    ss, tt, st = grad_dot(g_std, g_std), grad_dot(g_steer, g_steer), grad_dot(g_std, g_steer)
    den = float(ss + tt + 2 * st)
    return 1.0 if den <= 0 else math.sqrt(float(ss)) / math.sqrt(den)


def cosine(a: Grad, b: Grad) -> float:
    """cos angle(a, b) over all parameters (0 if either is zero): the diagnostics of §3.2 / Fig. 3."""
    na, nb = float(grad_dot(a, a)), float(grad_dot(b, b))
    return 0.0 if na <= 0 or nb <= 0 else float(grad_dot(a, b)) / math.sqrt(na * nb)


def steered_update(g_std: Grad, g_steer: Grad, g_reg: Grad, eta: float, g_other: Optional[Grad] = None
                   ) -> list[Optional[Tensor]]:
    """The gradient VGS steps on: ``eta (g_std + g_steer + g_reg) [+ g_other]`` (Eq. 18; ``g_other``
    is GRPO's part in Eq. 22, which eta does not scale). VGS is additive steering and a global
    rescale: nothing is projected out."""
    terms: list[tuple[float, Grad]] = [(eta, g_std), (eta, g_steer), (eta, g_reg)]
    if g_other is not None:
        terms.append((1.0, g_other))
    return grad_add(*terms)


__all__ = ["PAPER_ETA", "PAPER_ETA_GAMMA", "above", "adaptive_gamma", "cosine", "eta_exact", "eta_from_norms",
           "grad_add", "grad_dot", "mix_grpo", "paper_eta", "steered_update", "vds_quantiles", "vgs_objectives"]
