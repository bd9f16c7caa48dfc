"""Early-stopped warm start of a tiny smoke model, run once when the smoke cache entry is built.

A randomly initialised model on the real 151,936-token vocabulary almost never writes a
verifiable answer (each answer token has probability ~1/150,000), so reinforcement learning
with an answer reward sees zero advantage in every group and cannot start. The warm start is a
short supervised run (80 steps of 32, sampled softmax) on easy-vqa *training* questions with their
**correct** answers, images cropped to the shape, stopped early: at 80 steps the model writes
well-formed answers (``\\boxed{teal}``, ``\\boxed{C}``) at about chance accuracy, before the answers
depend on the picture, so

* a smoke base model scores about what a constant answer scores, and
* it can still learn: supervised colour naming takes it from chance to ~0.8 in 60 steps, and RL
  with a verifiable reward (``boxed-exact``) has groups with mixed rewards.

The stopping point matters: colour naming appears between steps 70 and 100 of this run itself.
The previous default, ``targets="random"`` (an answer drawn from the question's answer set,
independent of the image), planted no knowledge but saturated the answer position so that nothing
learnt afterwards (docs/smoke_profile.md, "How the smoke profile came to learn").

Vision models see the image (the warm start leaves the vision tower frozen); text models see the
question alone (they learn the format and the answers' prior). Deterministic for a given kind and
seed. Measured cost and effect: docs/smoke_profile.md.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch

from harness.data.packaged import EASY_VQA_COLORS, EASY_VQA_SHAPES, easy_vqa
from harness.models import PolicyBundle, freeze_vision_tower
from harness.optim import build_optimizer
from harness.scoring import encode_pairs, response_hidden_states
from harness.types import Sample


@dataclass(frozen=True)
class WarmStart:
    """Settings of the warm start (defaults: the smoke profile's, measured in docs/smoke_profile.md)."""

    steps: int = 80
    batch_size: int = 32
    lr: float = 3e-3
    negatives: int = 2048
    """Vocabulary ids sampled per step for the softmax (:func:`sampled_softmax_nll`)."""
    rows: int = 2000
    """easy-vqa training questions drawn from (``form="mixed"``: free-form and multiple choice)."""
    targets: str = "gold"
    """``gold`` (the correct answers; with ``crop`` and 80 steps, the smoke models' warm start,
    measured in ``bench/smoke_warm_start.py``) or ``random`` (an answer drawn from the question's
    answer set, independent of the image: :func:`random_answer_targets`, smoke version v3's)."""
    crop: bool = True
    """easy-vqa images cropped to the shape (``harness.data.packaged.crop_to_shape``)."""
    seed: int = 0


def random_answer_targets(samples: list[Sample], seed: int) -> list[Sample]:
    """Each sample with ``response = \\boxed{x}``, ``x`` drawn uniformly from the sample's answer set
    (its option letters, or the colours / shapes of its kind), independently of the image."""
    rng = random.Random(f"warm-start/{seed}")
    out = []
    for s in samples:
        if s.choices:
            pool: tuple[str, ...] = tuple(s.choices)
        else:
            pool = EASY_VQA_COLORS if s.meta.get("kind") == "color" else EASY_VQA_SHAPES
        out.append(replace(s, response=f"\\boxed{{{rng.choice(pool)}}}"))
    return out


def sampled_softmax_nll(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                        negatives: int, generator: torch.Generator) -> torch.Tensor:
    """Mean token cross-entropy of ``targets`` under ``softmax(hidden @ weight.T)``, estimated on a
    sample of the vocabulary (Jean et al., 2015, "On Using Very Large Target Vocabulary"): the
    softmax runs over every id that is a target in the batch plus ``negatives`` ids drawn uniformly
    from the rest, whose logits get ``log(rest / negatives)`` added so that their sum estimates the
    rest of the partition function. Costs O(negatives) per token instead of O(V)."""
    vocab = weight.shape[0]
    flat_h = hidden[mask.bool()]
    flat_t = targets[mask.bool()]
    positives = torch.unique(flat_t)
    keep = torch.ones(vocab, dtype=torch.bool)
    keep[positives] = False
    rest = torch.nonzero(keep).squeeze(-1)
    drawn = rest[torch.randint(len(rest), (negatives,), generator=generator)]
    candidates = torch.cat([positives, drawn])
    logits = flat_h @ weight[candidates].T
    correction = torch.zeros(len(candidates))
    correction[len(positives):] = torch.log(torch.tensor(len(rest) / negatives))
    logits = logits.float() + correction
    target_pos = torch.searchsorted(positives, flat_t)
    return torch.nn.functional.cross_entropy(logits, target_pos)


def warm_start(bundle: PolicyBundle, settings: WarmStart = WarmStart(),
               on_step: Optional[Callable[[int, float], None]] = None) -> list[float]:
    """Train ``bundle.model`` in place (language model only) on ``settings.targets`` with a sampled
    softmax (:func:`sampled_softmax_nll`); returns the per-step loss. Text models get the questions
    without their images."""
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    if settings.targets not in ("random", "gold"):
        raise ValueError(f"warm start targets must be 'random' or 'gold', got {settings.targets!r}")
    rows = easy_vqa(settings.rows, "train", seed=settings.seed, form="mixed", crop=settings.crop)
    if settings.targets == "random":
        rows = random_answer_targets(rows, settings.seed)
    if not bundle.is_vlm:
        rows = [replace(s, images=[]) for s in rows]
    model = bundle.model
    freeze_vision_tower(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(model, settings.lr, 0.0, (0.9, 0.999), 1e-8)
    losses = []
    model.train()
    for _ in range(settings.steps):
        batch = encode_pairs(bundle, rng.sample(rows, settings.batch_size))
        hidden, weight = response_hidden_states(bundle, batch, grad=True)
        loss = sampled_softmax_nll(hidden, weight, batch.response_ids, batch.response_mask, settings.negatives, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if on_step is not None:  # e.g. a probe of what the model has learnt so far (bench/)
            on_step(len(losses), losses[-1])
    model.eval()
    return losses
