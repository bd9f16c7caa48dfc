"""Supervised fine-tuning on (prompt, response) rows: token cross-entropy on response tokens only
(VOLD Eq. 4), through the shared run scaffold (checkpoints, resume, data parallel)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness import losses
from harness.forward import Forward
from harness.scoring import render_prompt
from harness.trainer import Context, run_training, sft_step_builder
from harness.types import Sample, Trajectories
from harness.update import Normalizers
from methods.grpo.data import load_rows, require
from methods.sft.config import SFTConfig


def _end_of_turn_id(tokenizer: Any) -> int:
    tid = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid is not None:
        return tid
    return int(tokenizer.eos_token_id)


def encode_sft(ctx: Context, samples: list[Sample]) -> Trajectories:
    """Rows -> Trajectories: the rendered prompt (left-padded) and the target response ids plus the
    end-of-turn token (right-padded, cut to ``max_length``); the response mask is the loss mask."""
    cfg: SFTConfig = ctx.cfg  # type: ignore[assignment]
    tok = ctx.policy.tokenizer
    eot = _end_of_turn_id(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eot
    prompts = [render_prompt(ctx.policy, s, cfg.view)["input_ids"].reshape(-1) for s in samples]
    responses = [torch.tensor((tok(s.response, add_special_tokens=False)["input_ids"] + [eot])[:cfg.max_length])
                 for s in samples]
    B, P, T = len(samples), max(len(p) for p in prompts), max(len(r) for r in responses)
    prompt_ids = torch.full((B, P), pad, dtype=torch.long)
    prompt_mask = torch.zeros((B, P), dtype=torch.long)
    response_ids = torch.full((B, T), pad, dtype=torch.long)
    response_mask = torch.zeros((B, T), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        prompt_ids[i, P - len(p):], prompt_mask[i, P - len(p):] = p, 1
        response_ids[i, :len(r)], response_mask[i, :len(r)] = r, 1
    dev = ctx.strategy.device
    return Trajectories(samples=list(samples), prompt_ids=prompt_ids.to(dev), prompt_mask=prompt_mask.to(dev),
                        response_ids=response_ids.to(dev), response_mask=response_mask.to(dev),
                        old_logp=torch.zeros((B, T), device=dev), group_ids=torch.arange(B, device=dev),
                        texts=[s.response or "" for s in samples])


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
