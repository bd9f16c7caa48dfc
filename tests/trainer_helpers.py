"""Shared fixtures of the trainer tests: a tiny causal LM built in memory, a fixed batch of
trajectories, and a plain log-prob function (independent of harness.scoring)."""
from __future__ import annotations

import torch

from harness.types import Sample, Trajectories

VOCAB = 48


def tiny_lm(seed: int = 0) -> torch.nn.Module:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
                      tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = Qwen3ForCausalLM(cfg).float()
    model.eval()
    return model


def model_inputs(traj: Trajectories) -> dict[str, torch.Tensor]:
    """``input_ids`` / ``attention_mask`` / ``position_ids`` of the left-padded prompt + response."""
    mask = torch.cat([traj.prompt_mask, traj.response_mask], 1)
    return {"input_ids": torch.cat([traj.prompt_ids, traj.response_ids], 1), "attention_mask": mask,
            "position_ids": (mask.cumsum(1) - 1).clamp(min=0)}


def response_positions(traj: Trajectories) -> slice:
    """The sequence positions whose outputs predict the response tokens."""
    P, T = traj.prompt_ids.shape[1], traj.response_ids.shape[1]
    return slice(P - 1, P - 1 + T)


def response_logp(logits: torch.Tensor, traj: Trajectories) -> torch.Tensor:
    """(B, T) log-probs of the response tokens from their predicting positions' logits; 0 on padding."""
    lp = torch.log_softmax(logits.float(), -1).gather(-1, traj.response_ids.unsqueeze(-1)).squeeze(-1)
    return lp * traj.response_mask


def logp_of(model: torch.nn.Module, traj: Trajectories) -> torch.Tensor:
    """(B, T) log-probs of the response tokens given the left-padded prompt; 0 on padding."""
    return response_logp(model(**model_inputs(traj)).logits[:, response_positions(traj)], traj)


class LogpOnly:
    """A stand-in ``harness.forward.ViewOutput`` carrying only the log-probs (enough for losses
    on sampled tokens)."""

    def __init__(self, logp: torch.Tensor):
        self.logp = logp


def forward_of(model: torch.nn.Module, view: str = "full"):
    """An update ``forward_fn`` for ``model``: {view: log-probs of the micro-batch}."""
    return lambda mb: {view: LogpOnly(logp_of(model, mb))}


def fixed_batch(seed: int = 0, groups: int = 4, n: int = 2, P: int = 4, T: int = 7) -> Trajectories:
    """Rows of varied response lengths (1..T) and prompt lengths, random advantages, and old
    log-probs perturbed so that importance ratios spread over and beyond the clip range."""
    g = torch.Generator().manual_seed(seed)
    B = groups * n
    prompt_ids = torch.randint(3, VOCAB, (B, P), generator=g)
    plen = torch.randint(1, P + 1, (B,), generator=g)
    prompt_mask = (torch.arange(P)[None] >= (P - plen)[:, None]).long()
    prompt_ids = prompt_ids * prompt_mask
    rlen = torch.randint(1, T + 1, (B,), generator=g)
    response_mask = (torch.arange(T)[None] < rlen[:, None]).long()
    response_ids = torch.randint(3, VOCAB, (B, T), generator=g) * response_mask
    traj = Trajectories(samples=[Sample(id=str(i), prompt="p", answer="a") for i in range(groups)],
                        prompt_ids=prompt_ids, prompt_mask=prompt_mask, response_ids=response_ids,
                        response_mask=response_mask, old_logp=torch.zeros(B, T),
                        group_ids=torch.arange(groups).repeat_interleave(n), texts=[""] * B)
    with torch.no_grad():
        cur = logp_of(tiny_lm(), traj)
    traj.old_logp = (cur + 0.4 * torch.randn(B, T, generator=g)) * response_mask
    traj.extras["advantages"] = torch.randn(B, generator=g)
    return traj


def visual_rollouts(student, seed: int, sample_seed: int, max_new_tokens: int, rewards: list[float]) -> Trajectories:
    """Two visual prompts (image + question) x 2 sampled responses of the smoke student, with the
    given rewards: a text-only view of these prompts loses the image."""
    from harness.data.synthetic import visual
    from harness.rollout.hf import HFRolloutEngine
    from harness.types import SamplingParams

    traj = HFRolloutEngine(student, batch_size=2, progress=False).generate(
        visual(2, seed=seed), SamplingParams(n=2, temperature=1.0, max_new_tokens=max_new_tokens, seed=sample_seed))
    traj.rewards = torch.tensor(rewards)
    return traj
