"""Memory of the distillation signal at REOPOLD's Table 8 sizes, by accounting (not measured):
what each loss keeps per GPU besides the models (App. D: the full-vocabulary GKD "incurs
out-of-memory (OOM) issue since they need to store the value for 150K vocab size for both
student and the teacher models"). Used by ``bench/reopold_memory.py`` and by the Table 8 report
(recipe ``memory: reopold``).

Setting (Table 8, 300-step visual runs; App. C / Table 7): student Qwen2.5-VL-7B (hidden 3584),
teacher Qwen2.5-VL-32B + NoisyRollout (hidden 5120), vocabulary 152,064 (the checkpoints'
lm_head rows), rollout batch 128 prompts x 12 responses of up to 2048 tokens on 8 GPUs
(393,216 response tokens per GPU, an upper bound); the micro-batch is not stated: 4 x 2048
tokens [A].

Two numbers per loss, both per GPU:

- *working*: the loss's own buffers for one micro-batch. A naive implementation materialises
  the student's and the teacher's full logits: 5 (N, V) fp32 buffers (student logits and
  log-softmax kept for backward, teacher log-probs, the mixture, the logit gradient). The
  chunked losses of ``harness.losses`` (every full-vocabulary and top-k loss here, and
  REOPOLD's log-softmax and entropy) keep 2 (chunk, V) fp32 buffers (the student's and the
  teacher's logits), ``chunk = harness.losses._auto_chunk(V)`` tokens (``CHUNK_BYTES``, 128 MiB
  each), and their kernels at most 5 (block, V) fp32 temporaries, ``block =
  harness.losses._kernel_rows(V)`` rows (1/16 of the budget).
- *stored*: the teacher signal kept for the rollout batch between scoring and update. Naive
  GKD: the teacher's full logits (bf16); chunked GKD (``methods/opd loss=jsd``): the teacher's
  final hidden states (bf16); the top-k variants (GKD†, Reopold†): k ids (int32) and k
  log-probs (fp32) per token; every variant also keeps the sampled token's teacher log-prob
  (fp32; REOPOLD needs nothing else).

``peak`` = working + stored: the memory the distillation signal adds to a GPU at its peak.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

GIB = 1024 ** 3
VOCAB = 152_064
"""Qwen2.5-VL lm_head rows."""
H_TEACHER = 5120
"""Qwen2.5-VL-32B hidden size."""
ROLLOUT_TOKENS_PER_GPU = 128 * 12 * 2048 // 8
"""128 prompts x 12 responses x 2048 tokens over 8 GPUs (upper bound: every response at the cap)."""
MICRO_TOKENS = 4 * 2048
"""Tokens per micro-batch [A] (not stated in the paper)."""
TOP_K = 5
"""App. D: "the commonly used Top-5 approximation"."""
H100_GIB = 80
"""Memory of one of the paper's GPUs (8 x H100 80GB, App. C)."""
FP32, BF16, INT32 = 4, 2, 4
BUFFERS = 5
"""(rows, V) fp32 buffers a loss keeps alive at once (naive: rows = the micro-batch; chunked: one chunk)."""


@dataclass
class MemoryRow:
    row: str
    """Table 8 row key (``gkd``, ``gkd_top5``, ``reopold``, ``reopold_top5``) or ``gkd_naive``."""
    loss: str
    working_bytes: int
    stored_bytes: int

    @property
    def peak_bytes(self) -> int:
        return self.working_bytes + self.stored_bytes

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "peak_bytes": self.peak_bytes, "working_gib": self.working_bytes / GIB,
                "stored_gib": self.stored_bytes / GIB, "peak_gib": self.peak_bytes / GIB}


def chunk_tokens(vocab: int = VOCAB) -> int:
    """Tokens per chunk of ``harness.losses``' chunked kernels (``_auto_chunk``)."""
    from harness.losses import _auto_chunk

    return _auto_chunk(vocab)


def accounting(micro_tokens: int = MICRO_TOKENS, *, vocab: int = VOCAB, h_teacher: int = H_TEACHER,
               rollout_tokens: int = ROLLOUT_TOKENS_PER_GPU, top_k: int = TOP_K,
               chunk: Optional[int] = None) -> list[MemoryRow]:
    """Per-GPU memory of the distillation signal of each Table 8 variant, in bytes (see the module
    docstring for what each row counts)."""
    from harness.losses import _kernel_rows

    c = chunk or chunk_tokens(vocab)
    chunked = (2 * c + BUFFERS * min(c, _kernel_rows(vocab))) * vocab * FP32
    logp = rollout_tokens * FP32  # the sampled token's teacher log-prob, kept by every variant
    topk = rollout_tokens * top_k * (INT32 + FP32)
    return [
        MemoryRow("gkd_naive", "naive GKD (materialised full logits)", BUFFERS * micro_tokens * vocab * FP32,
                  rollout_tokens * vocab * BF16),
        MemoryRow("gkd", "GKD, chunked (methods/opd loss=jsd)", chunked, rollout_tokens * h_teacher * BF16 + logp),
        MemoryRow("gkd_top5", f"GKD† (methods/opd loss=topk-jsd, top {top_k})", chunked, topk + logp),
        MemoryRow("reopold", "REOPOLD (sampled tokens; chunked log-softmax and entropy)", chunked, logp),
        MemoryRow("reopold_top5", f"Reopold† (methods/reopold top_k={top_k})", chunked, topk + logp),
    ]


def _gib(b: int) -> str:
    return f"{b / GIB:.3f}" if b >= GIB / 100 else f"{b / 1024 ** 2:.1f} MiB"


def report_section(micro_tokens: int = MICRO_TOKENS) -> dict[str, Any]:
    """The Table 8 report's memory section: a title, a note, headers and rows (GiB unless marked MiB)."""
    rows = accounting(micro_tokens)
    c = chunk_tokens()
    return {
        "title": "Memory per GPU at the paper's sizes (accounting, not measured)",
        "note": (f"Distillation signal only, models and optimizer excluded. {ROLLOUT_TOKENS_PER_GPU:,} response "
                 f"tokens per rollout batch per GPU (128 x 12 x 2048 / 8, an upper bound), micro-batch "
                 f"{micro_tokens:,} tokens [A], V = {VOCAB:,}, teacher hidden {H_TEACHER}, chunk {c} tokens, "
                 f"top-{TOP_K} ids int32 + log-probs fp32. The naive GKD alone exceeds one H100 "
                 f"({H100_GIB} GiB): the paper's OOM. Source: methods/reopold/memory.py."),
        "headers": ["variant", "row", "loss working memory per micro-batch (GiB)",
                    "teacher signal stored per GPU (GiB)", "peak (GiB)"],
        "rows": [[r.loss, r.row, _gib(r.working_bytes), _gib(r.stored_bytes), _gib(r.peak_bytes)] for r in rows],
        "values": [r.as_dict() for r in rows],
    }


__all__ = ["GIB", "MemoryRow", "accounting", "chunk_tokens", "report_section"]
