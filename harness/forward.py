"""The policy's forward pass of one micro-batch, once per view, as the losses consume it.

A method declares the views it trains through (``OnlineMethod.views``: VOLD ``("full",)``, VGS
``("full", "text_only")``). For each micro-batch the update runs exactly one policy forward per
view (:func:`policy_forward`, under the trainer's autocast) and hands the method's loss a
:class:`ViewOutput` per view: the sampled-token log-probs, and from the same graph the final
hidden states with the lm_head weight (``head``: the chunked full-vocabulary primitives of
``harness.losses`` take it) and, lazily, per-token entropies. Nothing in a loss runs the model
again; teacher and reference scoring happen before the update, without gradient.

The log-probs are exactly ``harness.scoring.token_logprobs`` of the same rows (same rendering,
same collation, same chunked log-softmax): tests/test_policy_forward.py checks values and
gradients.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, TypeVar

import torch
from torch import Tensor, nn

from harness import losses
from harness.models import PolicyBundle, full_weight, is_sharded
from harness.scoring import _check_view, _forward_hidden, logprobs_from_hidden, rendered_contexts
from harness.types import Trajectories


R = TypeVar("R")


def as_module_forward(module: nn.Module, fn: Callable[[Tensor, Tensor], R], x: Tensor) -> R:
    """``fn(x, module.weight)``, run as ``module``'s forward when the module is sharded (FSDP2,
    DeepSpeed ZeRO-3): its own hooks then gather the whole weight for the call, and reduce the
    weight's gradient over the ranks in backward, exactly as for ``module(x)``. The loss primitives
    that read the lm_head weight themselves (the fused full-vocabulary losses) go through it; an
    unsharded module just gives its weight."""
    if not is_sharded(module):
        return fn(x, module.weight)
    module.forward = lambda h: fn(h, module.weight)  # an instance attribute shadows the class's forward
    try:
        return module(x)
    finally:
        del module.forward


@dataclass
class ViewOutput:
    """One policy forward of a micro-batch under one view.

    ``logp`` (B, T) fp32: log-probs of the response tokens, 0 outside the loss mask, with grad.
    ``hidden`` (B, T, H): final hidden state at each column that predicts a response token (the
    graph ``logp`` was computed from). ``weight`` (V, H): the lm_head weight. ``mask``: the loss
    mask (``traj.response_mask``)."""

    logp: Tensor
    hidden: Tensor
    weight: Tensor
    mask: Tensor
    lm_head: Optional[nn.Module] = None
    """The module ``weight`` belongs to (``through_head`` runs losses as its forward when sharded)."""
    _entropy: dict = field(default_factory=dict, repr=False)

    @property
    def head(self) -> losses.HiddenHead:
        """The student side of ``harness.losses.full_kl`` / ``jsd`` / ``topk_jsd`` / ``entropy``
        (unsharded models; under FSDP2 / ZeRO-3 use ``through_head``)."""
        return losses.HiddenHead(self.hidden, self.weight)

    def through_head(self, fn: Callable[[losses.HiddenHead], R]) -> R:
        """``fn(head)`` for a loss that trains through the student's lm_head weight: the same as
        ``fn(self.head)``, except that under a sharded strategy the loss runs as the lm_head's
        forward (``as_module_forward``), so its weight is whole and its gradient reduced."""
        if self.lm_head is None or not self.weight.requires_grad:
            return fn(self.head)
        return as_module_forward(self.lm_head, lambda h, w: fn(losses.HiddenHead(h, w)), self.hidden)

    def entropy(self, chunk_size: Optional[int] = None, grad: bool = False) -> Tensor:
        """(B, T) entropy of the policy at every response position (0 outside the mask), computed
        once per (chunk_size, grad) from the forward's hidden states; detached unless ``grad``."""
        key = (chunk_size, grad)
        if key not in self._entropy:
            with torch.set_grad_enabled(grad):
                if grad:
                    self._entropy[key] = self.through_head(lambda head: losses.entropy(head, self.mask, chunk_size))
                else:  # a sharded weight is gathered whole (every rank computes its entropies)
                    head = losses.HiddenHead(self.hidden.detach(), full_weight(self.weight))
                    self._entropy[key] = losses.entropy(head, self.mask, chunk_size)
        return self._entropy[key]


Forward = Mapping[str, ViewOutput]
"""View name -> that view's output, for one micro-batch."""


def view_forward(bundle: PolicyBundle, mb: Trajectories, view: str, *, grad: bool = True) -> ViewOutput:
    """One forward of ``bundle`` over all rows of ``mb`` under ``view`` (the caller chooses the
    micro-batch size and the autocast)."""
    _check_view(bundle, mb, view)
    contexts = rendered_contexts(bundle, mb, view)
    resp, mask = mb.response_ids, mb.response_mask
    lm_head = bundle.model.get_output_embeddings()
    with torch.set_grad_enabled(grad):
        hidden = _forward_hidden(bundle, [contexts[int(g)] for g in mb.group_ids], mb)
        logp = logprobs_from_hidden(hidden, lm_head, resp, grad=grad)
        logp = (logp * mask.to(logp.device, logp.dtype)).float()
    weight = lm_head.weight if grad else lm_head.weight.detach()
    return ViewOutput(logp=logp, hidden=hidden, weight=weight, mask=mask.to(logp.device), lm_head=lm_head)


def policy_forward(bundle: PolicyBundle, mb: Trajectories, views: tuple[str, ...], *, grad: bool = True,
                   autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
                   ) -> dict[str, ViewOutput]:
    """``{view: view_forward(...)}``, one forward per distinct view, each inside a fresh
    ``autocast()`` context (the trainer's compute dtype)."""
    if not views:
        raise ValueError("a method must train through at least one view")
    out: dict[str, ViewOutput] = {}
    for view in views:
        if view in out:
            continue
        with autocast():
            out[view] = view_forward(bundle, mb, view, grad=grad)
    return out
