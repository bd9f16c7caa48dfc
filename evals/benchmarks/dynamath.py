"""DynaMath (Zou et al., 2025), DynaMath_Sample: 501 seed questions x 10 generated variants
(one split per variant).

Average accuracy is over all 5,010 rows (bootstrapped over seed questions); worst-case accuracy counts a seed question correct only
when all its variants are (the benchmark's robustness metric). Multiple choice by letter, float
answers within 0.001 (DynaMath's own tolerance), text answers by normalised match.
"""
from __future__ import annotations

from collections import defaultdict

from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import parse_inline_options
from evals.fixtures import make_image

SPLITS = tuple(f"sample_variant{k}" for k in range(1, 11))


class DynaMath(Benchmark):
    def limit_key(self, sample):
        return sample.meta["qid"]

    def to_sample(self, row, idx, source, split=None):
        variant = (split or SPLITS[0]).replace("sample_variant", "")
        value = row.get("decoded_image")
        img = self.image(value if value is not None else row.get("image"), source, idx, "decoded_image")
        meta = {"qid": str(row["id"]), "variant": int(variant) if variant.isdigit() else variant,
                "subject": row.get("subject"), "knowledge_level": row.get("knowledge_level"),
                "answer_type": row.get("answer_type")}
        atype = (row.get("answer_type") or "").lower()
        if "choice" in atype:
            choices = parse_inline_options(row["question"])
            s = self.make_sample(f"{row['id']}/v{variant}", row["question"], row["ground_truth"], images=[img],
                                 answer_type="multiple_choice", instruction="choice",
                                 meta={**meta, "family": "choice", "letters": list(choices or "ABCDE")})
            s.choices = choices or None
            return s
        if atype == "float":
            return self.make_sample(f"{row['id']}/v{variant}", row["question"], row["ground_truth"],
                                    images=[img], answer_type="numeric",
                                    meta={**meta, "family": "numeric", "abs_tol": 1e-3})
        return self.make_sample(f"{row['id']}/v{variant}", row["question"], row["ground_truth"], images=[img],
                                answer_type="text", meta={**meta, "family": "text"})

    def smoke_rows(self, n=2, seed=0):
        rows = []
        for v in (1, 2):        # two variants of each seed question, so worst-case is exercised
            for i in range(n):
                mc = i % 2 == 0
                rows.append({
                    "__split__": f"sample_variant{v}", "id": str(i + 1),
                    "question": ("Which function is increasing? (A) f (B) g (C) h (D) none" if mc
                                 else f"What is the slope of the line through the marked points? v{v}"),
                    "image": f"images/{i + 1}.png", "decoded_image": make_image(seed * 100 + 10 * v + i),
                    "ground_truth": "B" if mc else f"{0.5 * v:.3f}", "answer_type": "multiple choice" if mc else "float",
                    "subject": "analytic geometry", "knowledge_level": "high school"})
        return rows[: max(n, 2) * 2]

    def metric_units(self, records):
        # Units are seed questions, not rows: the variants of one seed question are correlated, so
        # a bootstrap over rows would give too narrow an interval. Each seed question's unit is
        # the mean over its variants (with all variants present the mean equals the row mean).
        by_q: dict[str, list[dict]] = defaultdict(list)
        for r in records:
            by_q[r["meta"]["qid"]].append(r)
        units = {name: [] for name in super().metric_units(records)}
        for rs in by_q.values():
            for name, values in super().metric_units(rs).items():
                units[name].append(sum(values) / len(values))
        worst = []
        for rs in by_q.values():
            k = min(len(r["correct"]) for r in rs)
            # per draw j: the seed question counts only if every variant is right; mean over draws
            worst.append(sum(all(r["correct"][j] for r in rs) for j in range(k)) / k)
        units["worst_case"] = worst
        return units


BENCHMARKS = [DynaMath(
    name="dynamath", title="DynaMath (sample, 10 variants)", hf_id="DynaMath/DynaMath_Sample", split=SPLITS,
    size=5010, tables=("VOLD Tab.1-3,5: DynaMath (Avg)",),
    scoring="letter / float within 1e-3 / normalised text; average and worst case over variants",
    family="text", required=("id", "question", "ground_truth", "answer_type"),
    group_by=("subject", "knowledge_level", "answer_type"),
    notes="--limit N keeps N seed questions with all their variants")]
