"""``python -m methods.vgs [--stage distill|teacher] --profile smoke|paper --out DIR [key=value ...]``."""
from __future__ import annotations

import sys
from pathlib import Path

from harness.config import parse_overrides
from methods.registry import load_method_config, method_parser, run_cli
from methods.vgs.config import PROFILES, TEACHER_PROFILES, TeacherGRPOConfig, VGSConfig


def main(argv: list[str] | None = None) -> int:
    p = method_parser("python -m methods.vgs", "Train VGS (distillation) or its teacher (GRPO).", ["smoke", "paper"],
                      "runs/vgs-<stage>-<profile>")
    p.add_argument("--stage", default="distill", choices=["distill", "teacher"])
    args = p.parse_args(argv)
    out = Path(args.out or f"runs/vgs-{args.stage}-{args.profile}")

    def run() -> Path | None:
        from methods.vgs import trainer

        overrides = parse_overrides(args.overrides)
        if args.stage == "teacher":
            cfg = load_method_config(TeacherGRPOConfig, TEACHER_PROFILES, args.profile, args.config, overrides)
            return trainer.train_teacher(cfg, out, stop_after=args.stop_after)
        cfg = load_method_config(VGSConfig, PROFILES, args.profile, args.config, overrides)
        return trainer.train(cfg, out, stop_after=args.stop_after)

    return run_cli(run, out, args.stop_after, prog="methods.vgs")


if __name__ == "__main__":
    sys.exit(main())
