"""Data types shared by every stage: a task ``Sample``, rollout ``Trajectories``, sampling settings.

A ``Sample`` is what every data set (training set, benchmark, synthetic generator) loads into;
``Trajectories`` is what every rollout engine returns and every loss consumes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from PIL import Image

AnswerType = Literal["free_form", "multiple_choice", "numeric", "integer", "yes_no", "text"]


@dataclass
class Sample:
    """One task instance.

    ``prompt`` is the full user-turn text (question, options, answer-format instruction), already
    formatted; the images, if any, are placed before it in the user turn. ``system`` is an optional
    system prompt. ``answer`` is the gold final answer (None only for SFT rows, whose target is
    ``response``). ``choices`` maps option letters to option texts for multiple choice.
    ``hint`` is privileged, answer-free context (PTD-PO) that only some scorer views show.
    """

    id: str
    prompt: str
    answer: str | None = None
    images: list[Image.Image] = field(default_factory=list)
    system: str | None = None
    response: str | None = None
    choices: dict[str, str] | None = None
    answer_type: AnswerType = "free_form"
    hint: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def has_image(self) -> bool:
        return len(self.images) > 0


@dataclass
class SamplingParams:
    """Generation settings of a rollout; ``temperature == 0`` means greedy."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = None
    logprobs: bool = True
    """Record ``old_logp``; False (evaluation, which never reads them) lets an engine skip the
    per-token log-softmax over the vocabulary and return zeros (the HF engine does)."""


@dataclass
class ObservationImage:
    """An image a tool returned during a multi-turn rollout, as the policy saw it.

    ``pixel_values`` / ``image_grid_thw`` are what the policy's image processor made of ``image``;
    the response holds ``n_tokens`` ``<|image_pad|>`` tokens for it. ``processor_key`` identifies
    that processor (``harness.scoring.processor_key``): a scorer with another processor cannot
    reproduce the token count, and refuses the trajectory.
    """

    image: Image.Image
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    n_tokens: int
    processor_key: str


@dataclass
class Trajectories:
    """A batch of sampled responses, ``B = len(samples) * n`` rows, grouped by prompt.

    Rows ``[g*n, (g+1)*n)`` belong to ``samples[g]`` and carry ``group_ids == g``.
    ``prompt_ids`` are left-padded (``prompt_mask`` marks real tokens); ``response_ids`` are
    right-padded (``response_mask`` marks generated tokens up to and including EOS).
    ``old_logp`` holds the sampling policy's log-probability of each response token (0 on
    padding). ``rewards`` is filled in by the reward step (None for reward-free methods);
    ``texts`` are the decoded responses.

    ``response_mask`` is the *loss* mask: 1 on tokens the policy generated (and is trained on).
    ``response_valid`` marks every real token of the response, generated or not (a multi-turn
    tool rollout appends observation tokens that the policy attends to but never trains on);
    None means it equals ``response_mask`` (single-turn rollouts). ``response_images[b]`` are the
    observation images of row ``b`` in order (``ObservationImage``; None for single-turn rollouts):
    scorers insert them after the row's context images. Per-row fields (tensors whose
    first dimension is ``B``, lists of length ``B``) are indexed by ``harness.update.select_rows``.
    """

    samples: list[Sample]
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    old_logp: torch.Tensor
    group_ids: torch.Tensor
    texts: list[str]
    rewards: torch.Tensor | None = None
    response_valid: torch.Tensor | None = None
    response_images: list[list[ObservationImage]] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, T): 1 on every real response token (``response_valid``, else ``response_mask``)."""
        return self.response_mask if self.response_valid is None else self.response_valid

    def __len__(self) -> int:
        return int(self.response_ids.shape[0])

    def sample_of(self, row: int) -> Sample:
        return self.samples[int(self.group_ids[row])]
