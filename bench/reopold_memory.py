"""Memory of the distillation signal at REOPOLD's Table 8 sizes (the paper's full-vocabulary GKD
ran out of memory): what each loss keeps per GPU besides the models, by accounting, not
measurement (no GPU was lent to the session that wrote this; ``bench/losses.py --device cuda``
measures the chunked kernels when one is).

Setting (Table 8, 300-step visual runs): student Qwen2.5-VL-7B (hidden 3584), teacher
Qwen2.5-VL-32B (+ NoisyRollout; hidden 5120), vocabulary 152,064 (the checkpoints' lm_head rows),
rollout batch 128 prompts x 12 responses of up to 2048 tokens on 8 GPUs; the micro-batch is
not stated: ``--micro-tokens`` (default 4 x 2048) [A].

Rows:
- ``naive GKD``: per micro-batch the student's and the teacher's full logits are materialised
  (fp32 student logits and log-softmax kept for backward, teacher log-probs, the JSD mixture and
  the logit gradient: 5 N x V fp32 buffers), and the teacher's distribution for the rollouts it
  scored is stored between scoring and update (full logits, bf16).
- ``chunked GKD (methods/opd loss=jsd)``: ``harness.losses`` keeps at most ~5 (chunk, V) fp32
  buffers (``_auto_chunk``: about 32 MiB each) and stores the teacher's final hidden states
  (bf16) instead of its logits.
- ``REOPOLD``: the teacher's log-prob of each sampled token (fp32) is stored; the student's
  log-probs and entropies go through the same chunked log-softmax (per chunk O(chunk x V)).

    PYTHONPATH=. python bench/reopold_memory.py [--micro-tokens 8192] [--out results/bench/reopold_memory.md]
"""
from __future__ import annotations

import argparse
from pathlib import Path

V, H_TEACHER = 152_064, 5120
ROLLOUT_TOKENS_PER_GPU = 128 * 12 * 2048 // 8
GIB = 1024 ** 3


def accounting(micro_tokens: int) -> list[tuple[str, float, float]]:
    """(loss, working memory per micro-batch GiB, stored teacher signal per GPU GiB)."""
    from harness.losses import _auto_chunk

    chunk = _auto_chunk(V)
    return [
        ("naive GKD (materialised logits)", 5 * micro_tokens * V * 4 / GIB, ROLLOUT_TOKENS_PER_GPU * V * 2 / GIB),
        ("chunked GKD (methods/opd loss=jsd)", 5 * chunk * V * 4 / GIB, ROLLOUT_TOKENS_PER_GPU * H_TEACHER * 2 / GIB),
        ("REOPOLD (sampled tokens; chunked log-softmax and entropy)", 5 * chunk * V * 4 / GIB,
         ROLLOUT_TOKENS_PER_GPU * 4 / GIB),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--micro-tokens", type=int, default=4 * 2048)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    lines = [f"Per GPU, upper bounds: {ROLLOUT_TOKENS_PER_GPU:,} response tokens per rollout batch per GPU "
             f"(128 x 12 x 2048 / 8), micro-batch {args.micro_tokens:,} tokens [A], V = {V:,}.", "",
             "| loss | loss working memory per micro-batch (GiB) | teacher signal stored per GPU (GiB) |",
             "|---|---|---|"]
    for name, work, stored in accounting(args.micro_tokens):
        lines.append(f"| {name} | {work:.2f} | {stored:.3f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
