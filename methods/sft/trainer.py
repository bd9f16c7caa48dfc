"""Supervised fine-tuning on (prompt, response) rows: token cross-entropy on response tokens only
(VOLD Eq. 4), through the shared run scaffold (checkpoints, resume, data parallel)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness import losses
from harness.forward import Forward
from harness.scoring import encode_pairs
from harness.trainer import Context, run_training, sft_step_builder
from harness.types import Sample, Trajectories
from harness.update import Normalizers
from methods.grpo.data import load_rows, require
from methods.sft.config import SFTConfig


def encode_sft(ctx: Context, samples: list[Sample]) -> Trajectories:
    """Rows -> Trajectories (``harness.scoring.encode_pairs``): the response mask is the loss mask."""
    cfg: SFTConfig = ctx.cfg  # type: ignore[assignment]
    return encode_pairs(ctx.policy, samples, cfg.view, cfg.max_length, ctx.strategy.device)


def make_sft_loss(agg: str, view: str = "full"):
    def sft_loss(fwd: Forward, mb: Trajectories, norm: Normalizers) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """VOLD Eq. 4: -log pi_theta(y*_t | q, y*_<t) on response tokens, aggregated by ``agg``
        over the whole batch (global normalisers)."""
        nll = losses.agg_loss(-fwd[view].logp, mb.response_mask, agg, global_tokens=norm.global_tokens,
                              global_seqs=norm.global_seqs, max_len=norm.max_len)
        return nll, {}
    return sft_loss


def load_sft_rows(cfg: SFTConfig) -> list[Sample]:
    return require(load_rows(cfg), "response", cfg.data, "SFT needs the target response")


def train(cfg: SFTConfig, out_dir: str | Path, *, stop_after: int | None = None, **hooks: Any) -> Path | None:
    """Run (or resume) SFT into ``out_dir``; returns the final model directory."""
    return run_training(cfg, out_dir, load_data=lambda: load_sft_rows(cfg),
                        build_step=sft_step_builder(encode_sft, make_sft_loss(cfg.loss_agg, cfg.view)),
                        samples_per_step=cfg.batch_size, stop_after=stop_after, desc="sft", **hooks)
