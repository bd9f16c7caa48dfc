"""PTD-PO's objective as pure tensor functions (arXiv 2606.07000; docs/methods/ptdpo.md §3).

    Eq. 3   -J_GRPO = clipped surrogate (token ratio, [C] clip 0.2 / 0.3, dual clip 3.0)
                      + beta * KL(pi_theta || pi_ref)      (k3 on the sampled token, beta = 1e-2)
    Eq. 8   F = {(i, t) : rbar(x) < tau_ptd, r_i = 0, m_{i,t} = 1}      (``routing_weights``)
    Eq. 11  L_PTD = sum_{(i,t) in F} D_PTD(q^h_{i,t}, p_{i,t}) / |F|    (``ptd_term``)
    Eq. 12  L_PTD-PO = -J_GRPO + lambda_PTD * L_PTD                     (``ptdpo_loss``)
    Eqs. 13-17  D_PTD = JSD over the top-K union support with a tail bucket
                (``harness.losses.topk_jsd``; ``compressed_distributions`` materialises the
                |S| + 1 categories for inspection and tests)

Nothing here calls a model. ``logp`` (and the student side of the divergence) carry the
gradient; old log-probs, advantages, accuracies, routing weights, the reference's log-probs and
the hinted teacher's hidden states are data and are detached.
"""
from __future__ import annotations

from typing import Callable, Literal, Optional, Union

import torch
from torch import Tensor

from harness import losses
from harness.routing import route_failed

__all__ = ["DIVERGENCES", "SELECTIONS", "compressed_distributions", "group_stats", "ptd_divergence",
           "ptd_term", "ptd_weights", "ptdpo_loss", "ref_kl_tokens", "routing_weights"]

SELECTIONS = ("failed", "all")
DIVERGENCES = ("topk_jsd", "jsd", "forward_kl", "reverse_kl")
Number = Union[int, float, Tensor, None]


def routing_weights(accuracy: Tensor, group_ids: Tensor, tau: float = 1.0,
                    selection: Literal["failed", "all"] = "failed") -> Tensor:
    """alpha_i of Eqs. 8 / 79, (B,) float32 in {0, 1}.

    ``failed`` (the paper): ``1[rbar(x) < tau] * 1[acc_i = 0]`` (``harness.routing.route_failed``);
    ``all`` (Table 2, "All Trajectories"): ``1[rbar(x) < tau]``, every rollout of a routed group,
    correct or not (docs/methods/ptdpo.md T13). ``accuracy`` is the binary accuracy, not the
    composite reward (T2)."""
    if selection == "failed":
        return route_failed(accuracy, group_ids, tau).to(torch.float32)
    if selection != "all":
        raise ValueError(f"unknown trajectory selection {selection!r}; expected one of {SELECTIONS}")
    route_failed(accuracy, group_ids, tau)  # the same validation (range, shape)
    return (_group_mean(accuracy, group_ids) < tau).to(torch.float32)


def _group_mean(accuracy: Tensor, group_ids: Tensor) -> Tensor:
    """rbar(x) of each rollout's group (Eq. 7), (B,) float64."""
    acc = accuracy.detach().to(torch.float64)
    _, inv = torch.unique(torch.as_tensor(group_ids, device=acc.device), return_inverse=True)
    n = int(inv.max()) + 1 if inv.numel() else 0
    sums = torch.zeros(n, dtype=torch.float64, device=acc.device).index_add_(0, inv, acc)
    return (sums / torch.bincount(inv, minlength=n).to(torch.float64))[inv]


def group_stats(accuracy: Tensor, group_ids: Tensor) -> dict[str, float]:
    """Shares of all-fail (m = 0), informative (0 < m < G) and all-pass (m = G) groups (Eq. 5)."""
    acc = accuracy.detach().double().cpu()
    _, inv = torch.unique(torch.as_tensor(group_ids).cpu(), return_inverse=True)
    n = int(inv.max()) + 1 if inv.numel() else 0
    if n == 0:
        return {"groups_all_fail": 0.0, "groups_informative": 0.0, "groups_all_pass": 0.0}
    m = torch.zeros(n, dtype=torch.float64).index_add_(0, inv, acc)
    g = torch.bincount(inv, minlength=n).to(torch.float64)
    fail, allpass = (m == 0).double().mean(), (m == g).double().mean()
    return {"groups_all_fail": float(fail), "groups_informative": float(1 - fail - allpass),
            "groups_all_pass": float(allpass)}


def compressed_distributions(p_logits: Tensor, q_logits: Tensor, k: int,
                             support: Literal["union", "student", "teacher"] = "union"
                             ) -> tuple[Tensor, Tensor, Tensor]:
    """Eqs. 14-16 materialised: ``(ptilde, qtilde, in_s)`` from student / teacher logits (N, V).

    ``in_s`` (N, V) bool is S = TopK(p) U TopK(q) (``support="union"``, Eq. 14). ``ptilde`` and
    ``qtilde`` are (N, V + 1): the probabilities on S at their vocabulary positions, 0 outside S,
    and the tail mass ``1 - sum_S`` (Eq. 15) in the last column, summed over the complement so it
    is never negative. A reference for tests and inspection (it holds N x V values); training uses
    ``harness.losses.topk_jsd``, which computes JSD(qtilde, ptilde) chunk by chunk."""
    if p_logits.shape != q_logits.shape or p_logits.dim() != 2:
        raise ValueError(f"logits must both be (N, V), got {tuple(p_logits.shape)} and {tuple(q_logits.shape)}")
    kk = min(k, p_logits.shape[-1])
    in_s = torch.zeros_like(p_logits, dtype=torch.bool)
    if support in ("union", "student"):
        in_s.scatter_(1, p_logits.topk(kk, -1).indices, True)
    if support in ("union", "teacher"):
        in_s.scatter_(1, q_logits.topk(kk, -1).indices, True)
    out = []
    for z in (p_logits, q_logits):
        prob = z.softmax(-1)
        tail = torch.where(in_s, torch.zeros_like(prob), prob).sum(-1, keepdim=True)
        out.append(torch.cat([torch.where(in_s, prob, torch.zeros_like(prob)), tail], -1))
    return out[0], out[1], in_s


def ptd_divergence(student: losses.Side, teacher: losses.Side, mask: Tensor,
                   divergence: str = "topk_jsd", *, k: int = 100,
                   support: Literal["union", "student", "teacher"] = "union",
                   chunk_size: Optional[int] = None, token_weights: Optional[Tensor] = None
                   ) -> Union[Tensor, losses.FusedLoss]:
    """D_PTD(q^h_{i,t}, p_{i,t}) per token, (B, T), 0 where ``mask`` is 0 (only those tokens are
    computed: pass the routed mask); with ``token_weights`` the fused ``harness.losses.FusedLoss``
    (weighted sum and per-token values) instead. ``topk_jsd`` is Eq. 17 (K = 100, union support); ``jsd``
    the full-vocabulary Eq. 13; ``forward_kl`` KL(q || p) and ``reverse_kl`` KL(p || q) are the
    directional alternatives of App. D.2 / Fig. 8. Student and teacher are logits or
    ``harness.losses.HiddenHead`` (hidden states + lm_head weight: no N x V logits kept)."""
    fw = {"token_weights": token_weights}
    if divergence == "topk_jsd":
        return losses.get_loss("topk_jsd")(student, teacher, mask, k, chunk_size, support, **fw)
    if divergence == "jsd":
        return losses.get_loss("jsd")(student, teacher, mask, chunk_size, **fw)
    if divergence in ("forward_kl", "reverse_kl"):
        return losses.get_loss("full_kl")(student, teacher, mask, divergence.split("_")[0], chunk_size, **fw)
    raise ValueError(f"unknown PTD divergence {divergence!r}; expected one of {DIVERGENCES}")


def ptd_term(div_tokens: Tensor, alpha: Tensor, mask: Tensor, *, global_tokens: Number = None) -> Tensor:
    """L_PTD of Eq. 11: the mean of ``div_tokens`` over the routed tokens F = {alpha_i = 1, m_{i,t} = 1}.

    ``global_tokens`` is |F| over the whole optimizer mini-batch (all ranks; docs/methods/ptdpo.md
    T3), so micro-batch pieces sum to the mini-batch value; None uses this call's |F|. The
    paper's ``+ eps`` in the denominator only guards an empty F: here an empty F gives exactly 0
    with a zero gradient. Values outside F (also inf / NaN there) never contribute."""
    w = ptd_weights(alpha, mask, global_tokens=global_tokens, dtype=div_tokens.dtype)
    return (torch.where(w != 0, div_tokens, torch.zeros_like(div_tokens)) * w).sum()


def ptd_weights(alpha: Tensor, mask: Tensor, *, global_tokens: Number = None,
                dtype: torch.dtype = torch.float64) -> Tensor:
    """Per-token weights w (B, T) of ``ptd_term``: ``L_PTD = sum_{i,t} w D_{i,t}``, with
    w = alpha_i m_{i,t} / |F| (``harness.losses.agg_weights`` of the routed mask, token-mean). The
    fused divergences take these as ``token_weights``."""
    if alpha.dim() != 1 or alpha.shape[0] != mask.shape[0]:
        raise ValueError(f"alpha must be (B,) = ({mask.shape[0]},), got {tuple(alpha.shape)}")
    routed = alpha.detach().to(mask.device, dtype)[:, None] * (mask != 0).to(dtype)
    return losses.agg_weights(routed, "token-mean", global_tokens=global_tokens, dtype=dtype)


def ref_kl_tokens(logp: Tensor, ref_logp: Tensor, mask: Tensor, estimator: str = "k3",
                  direction: Literal["reverse", "swapped"] = "reverse") -> Tensor:
    """Per-token reference KL of Eq. 3's ``beta D_KL`` on the sampled tokens, 0 on padding.
    ``reverse``: ``harness.losses.kl_estimate`` of KL(pi_theta || pi_ref) (``k3`` by default, T5);
    ``swapped``: [C]'s ``kl_direction=forward_kl``, the same estimator with the two log-probs
    exchanged (for k3: exp(d) - 1 - d, d = logp - ref_logp)."""
    if direction == "reverse":
        k = losses.kl_estimate(logp, ref_logp, estimator, mask=mask)
    elif direction == "swapped":
        d = torch.where(mask != 0, ref_logp.detach().to(logp.dtype) - logp, torch.zeros_like(logp))
        k = {"k1": lambda: d, "k2": lambda: 0.5 * d.square(), "k3": lambda: torch.expm1(-d) + d}[estimator]()
    else:
        raise ValueError(f"unknown KL direction {direction!r}; expected 'reverse' or 'swapped'")
    return k * (mask != 0).to(k.dtype)


def ptdpo_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *, lambda_ptd: float,
               alpha: Optional[Tensor] = None,
               ptd_tokens: Union[Tensor, Callable[[Tensor], losses.FusedLoss], None] = None,
               ref_logp: Optional[Tensor] = None, kl_coef: float = 0.0, kl_estimator: str = "k3",
               kl_direction: Literal["reverse", "swapped"] = "reverse", kl_row_weights: Optional[Tensor] = None,
               pg_coef: float = 1.0, clip_low: float = 0.2, clip_high: float = 0.3,
               clip_ratio_c: Optional[float] = None, agg: str = "token-mean", ratio_level: str = "token",
               global_tokens: Number = None, global_seqs: Number = None, max_len: Optional[int] = None,
               ptd_global_tokens: Number = None, token_weights: Optional[Tensor] = None
               ) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 12, to be minimised: ``pg_coef * surrogate + kl_coef * KL_ref + lambda_ptd * L_PTD``.

    The surrogate is ``harness.losses.policy_loss`` (GRPO / DAPO / GSPO by ``clip_*``, ``agg``
    and ``ratio_level``); the reference KL (Eq. 3's ``beta D_KL``) uses the same aggregation and
    denominators, with ``kl_row_weights`` (B,) zeroing rows ([C]'s routed-group KL skip, T6).
    ``ptd_tokens`` are the per-token divergences on the routed tokens (``ptd_divergence``), or,
    for the fused path, a function of the term's ``ptd_weights`` returning a
    ``harness.losses.FusedLoss``; ``alpha`` the routing weights. With ``lambda_ptd == 0`` (or no routed token) the value and
    the gradient are those of the optimiser alone, exactly: the PTD term is not evaluated.
    ``pg_coef = 0`` drops the surrogate (the pure self-distillation baseline OPSD).
    ``token_weights`` (B, T) (the rollout-IS weights, harness.losses.rollout_is_weights) weight the
    surrogate only; the reference KL and the PTD term are not importance-weighted surrogates.
    Returns ``(loss, stats)``; stats are detached."""
    glob = dict(global_tokens=global_tokens, global_seqs=global_seqs, max_len=max_len)
    stats: dict[str, Tensor] = {}
    total = torch.zeros((), dtype=logp.dtype, device=logp.device)
    if pg_coef != 0:
        pg, pg_stats = losses.policy_loss(logp, old_logp, advantages, mask, clip_low=clip_low, clip_high=clip_high,
                                          agg=agg, clip_ratio_c=clip_ratio_c, ratio_level=ratio_level,
                                          token_weights=token_weights, **glob)
        stats.update({f"pg_{k}": v for k, v in pg_stats.items()})
        total = pg if pg_coef == 1 else pg_coef * pg
    if kl_coef > 0:
        if ref_logp is None:
            raise ValueError("kl_coef > 0 needs ref_logp (the reference model's log-probs on x)")
        kl_tok = ref_kl_tokens(logp, ref_logp, mask, kl_estimator, kl_direction)
        kl_mask = mask if kl_row_weights is None else mask * kl_row_weights.detach().to(mask.dtype)[:, None]
        kl_val = losses.agg_loss(kl_tok, kl_mask, agg, **glob)
        total = total + kl_coef * kl_val
        with torch.no_grad():
            valid = (mask != 0).to(kl_tok.dtype)
            stats["kl_ref"] = (kl_tok * valid).sum() / valid.sum().clamp_min(1)
    if lambda_ptd != 0 and ptd_tokens is not None:
        if alpha is None:
            raise ValueError("the PTD term needs alpha (the routing weights)")
        if callable(ptd_tokens):
            fused = ptd_tokens(ptd_weights(alpha, mask, global_tokens=ptd_global_tokens))
            ptd, ptd_tokens = fused.loss, fused.values
        else:
            ptd = ptd_term(ptd_tokens, alpha, mask, global_tokens=ptd_global_tokens)
        total = total + lambda_ptd * ptd
        with torch.no_grad():
            stats["ptd"] = ptd.detach()
            routed = alpha.detach().to(mask.dtype)[:, None] * (mask != 0).to(mask.dtype)
            stats["ptd_token_mean"] = (ptd_tokens.detach() * routed).sum() / routed.sum().clamp_min(1)
    return total, stats
