"""SFT settings: a generic method, so its defaults are neutral (TRL's ``SFTConfig``, each cited)
and no paper's recipe. A paper that runs SFT states its values in its recipe stage
(``reproduce/papers/<paper>.yaml``); VOLD's stage 1 states its own in ``methods.vold.config``.
``PROFILES["smoke"]`` is a tiny offline CPU run on synthetic math with reference solutions — not
a reproduction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from harness.train_config import TrainConfig


@dataclass
class SFTConfig(TrainConfig):
    batch_size: int = 8
    """Rows per optimizer step, over all ranks (TRL's ``per_device_train_batch_size`` default)."""
    lr: float = 2e-5
    """TRL's ``SFTConfig.learning_rate`` default."""
    max_length: int = 1024
    """Responses are cut to this many tokens (TRL's ``SFTConfig.max_length`` default)."""
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"] = "token-mean"
    """Token-mean of the response-token NLL over the whole batch, as TRL's SFTTrainer does."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1 or self.max_length < 1:
            raise ValueError("batch_size and max_length must be >= 1")


PROFILES: dict[str, dict[str, Any]] = {
    # SFT has no recipe of its own: the paper profile is the neutral defaults, and a recipe stage
    # (or the command line) gives model, data and the paper's settings.
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
        "freeze_vision": True,
        "save_every": 2,
        "device": "cpu",
    },
}
