"""One rule for how many tokens a full-vocabulary computation handles at a time.

Anything that materialises ``(tokens, V)`` logits chunk by chunk (``harness.scoring.
logprobs_from_hidden``; the chunked losses) sizes its chunk so one fp32 ``(chunk, V)`` buffer
stays within ``CHUNK_BYTES``: the chunk shrinks as the vocabulary grows, and memory per chunk no
longer depends on V. At V = 151,936 the default is 220 tokens (128 MiB). ``harness.losses``
documents what its chunks hold on top of that buffer.
"""
from __future__ import annotations

CHUNK_BYTES = 128 * 2**20
"""The one byte budget of one fp32 ``(chunk, V)`` logits buffer (128 MiB): large enough that the
chunk's matmuls stay efficient (on a 2-core CPU at V = 151,936, fp32, ~30% slower per token at 110
tokens than at 220), small enough that no N x V tensor exists."""


def tokens_per_chunk(vocab: int, bytes_budget: int = CHUNK_BYTES, itemsize: int = 4) -> int:
    """Tokens per chunk so one ``(chunk, vocab)`` buffer of ``itemsize``-byte values fits
    ``bytes_budget`` (at least 1)."""
    if vocab < 1 or bytes_budget < 1 or itemsize < 1:
        raise ValueError(f"vocab, bytes_budget and itemsize must be >= 1, got {vocab}, {bytes_budget}, {itemsize}")
    return max(1, bytes_budget // (itemsize * vocab))
