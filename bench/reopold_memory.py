"""Memory of the distillation signal at REOPOLD's Table 8 sizes (the paper's full-vocabulary GKD
ran out of memory): what each loss keeps per GPU besides the models, by accounting, not
measurement (``bench/losses.py --device cuda`` measures the chunked kernels when a GPU is lent).
The accounting itself (settings, what each row counts) is ``methods/reopold/memory.py``, which
the Table 8 report renders too.

    PYTHONPATH=. python bench/reopold_memory.py [--micro-tokens 8192] [--out results/bench/reopold_memory.md]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from methods.reopold.memory import report_section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--micro-tokens", type=int, default=4 * 2048)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sec = report_section(args.micro_tokens)
    lines = [sec["note"], "", "| " + " | ".join(sec["headers"]) + " |", "|" + "---|" * len(sec["headers"])]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in sec["rows"]]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
