"""No redundant work: one chunking rule for full-vocabulary log-probs (harness.chunking), and the
old-log-prob forward skipped when the rollout engine's log-probs are the trainer's own."""
from __future__ import annotations

import pytest
import torch

from harness.chunking import CHUNK_BYTES, tokens_per_chunk
from harness.scoring import logprobs_from_hidden


def test_tokens_per_chunk_fits_the_byte_budget():
    assert tokens_per_chunk(151_936) == (1 << 23) // 151_936 == 55      # 32 MiB of fp32 logits
    for vocab in (7, 1_500, 151_936, 10**9):
        c = tokens_per_chunk(vocab)
        assert c >= 1 and (c * vocab * 4 <= CHUNK_BYTES or c == 1)
        assert (c + 1) * vocab * 4 > CHUNK_BYTES
    assert tokens_per_chunk(1000, bytes_budget=8000, itemsize=2) == 4
    with pytest.raises(ValueError):
        tokens_per_chunk(0)


def test_logprobs_from_hidden_chunks_by_the_budget_and_matches_one_chunk(monkeypatch):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=False)
    hidden, ids = torch.randn(3, 5, 16), torch.randint(0, 300, (3, 5))
    full = torch.log_softmax(head(hidden), -1).gather(-1, ids[..., None]).squeeze(-1)
    calls = []
    counted = lambda h: (calls.append(h.shape[0]), head(h))[1]  # noqa: E731
    counted.weight = head.weight
    monkeypatch.setattr("harness.scoring.tokens_per_chunk", lambda v: tokens_per_chunk(v, bytes_budget=4 * 300 * 4))
    got = logprobs_from_hidden(hidden, counted, ids)
    assert calls == [4, 4, 4, 3]                     # 4 tokens a chunk: the budget, given V = 300
    assert torch.allclose(got, full, atol=1e-6)
    with pytest.raises(ValueError, match="chunk_tokens"):
        logprobs_from_hidden(hidden, lambda h: head(h), ids)   # a bare function: no V to size by
    assert torch.allclose(logprobs_from_hidden(hidden, lambda h: head(h), ids, chunk_tokens=15), full, atol=1e-6)
