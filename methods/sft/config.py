"""SFT settings. Defaults are VOLD's stage-1 SFT recipe (arXiv 2510.23497 Table 4, §4.1, as
transcribed in shared METHODS.md §1.3-1.4); other defaults name their source. ``PROFILES["smoke"]``
is a tiny offline CPU run on synthetic math with reference solutions — not a reproduction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from harness.train_config import TrainConfig


@dataclass
class SFTConfig(TrainConfig):
    model: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    """VOLD §4.1: student Qwen2.5-VL-3B-Instruct."""
    data: str = "mixture-of-thoughts"
    """VOLD §3.2: SFT on Mixture-of-Thoughts prompts with teacher (Qwen3-8B) traces
    ("MoT-Teacher-8B", generated in stage 0); the original MoT traces give the X-Reasoner row."""
    steps: int = 4000
    """VOLD Table 4: 4000 steps (~5 epochs, §4.1)."""
    batch_size: int = 256
    """VOLD Table 4: batch size 256 (rows per optimizer step, over all ranks)."""
    lr: float = 5e-5
    """VOLD Table 4: stage-1 learning rate."""
    weight_decay: float = 0.01
    """VOLD Table 4: AdamW, weight decay 1e-2."""
    lr_schedule: Literal["cosine", "constant", "linear"] = "cosine"
    """VOLD Table 4: cosine."""
    warmup_steps: int = 150
    """VOLD Table 4: 150 warmup steps (stage 1)."""
    max_length: int = 8192
    """VOLD Table 4 / §3.2: traces under 8192 tokens; responses are cut to this many tokens."""
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"] = "token-mean"
    """VOLD Eq. 4 sums over response tokens; its normalisation is unstated (V13): token-mean
    over the whole batch, as TRL's SFTTrainer does."""
    micro_batch_size: int = 4
    save_every: int = 500

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1 or self.max_length < 1:
            raise ValueError("batch_size and max_length must be >= 1")


PROFILES: dict[str, dict[str, Any]] = {
    "paper": {},
    # Offline CPU smoke run: tiny random Qwen2.5-VL, synthetic text math with short reference
    # solutions (harness.data.synthetic.text_math), fp32, lr 1e-3, 16 steps (token NLL ~7.1 ->
    # ~4.3, under a second of training).
    "smoke": {
        "model": "smoke:qwen2_5_vl",
        "data": "smoke-text-math",
        "data_limit": 32,
        "steps": 16,
        "batch_size": 4,
        "micro_batch_size": 2,
        "max_length": 48,
        "lr": 1e-3,
        "warmup_steps": 0,
        "lr_schedule": "constant",
        "dtype": "float32",
        "autocast": None,
        "save_every": 2,
        "device": "cpu",
    },
}
