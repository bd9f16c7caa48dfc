"""DynaMath (Zou et al., 2025), DynaMath_Sample: 501 seed questions x 10 generated variants
(one split per variant).

Average accuracy is over all 5,010 rows (bootstrapped over seed questions); worst-case accuracy counts a seed question correct only
when all its variants are (the benchmark's robustness metric). Scored by VLMEvalKit's
``DynaMath_auxeval`` rule (multiple choice by letter, float answers within 0.001, free-form answers
when the gold contains the extracted text), without its judge unless one is given.
Smoke items: a seed question is an easy-vqa test question text, its variants 2 test images asked it
(multiple choice or free text) (evals/smoke.py).
"""
from __future__ import annotations

import random
from collections import defaultdict

from evals import smoke
from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import parse_inline_options

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
                                 meta={**meta, "family": "dynamath", "letters": list(choices or "ABCDE")})
            s.choices = choices or None
            return s
        if atype == "float":
            return self.make_sample(f"{row['id']}/v{variant}", row["question"], row["ground_truth"],
                                    images=[img], answer_type="numeric",
                                    meta={**meta, "family": "dynamath"})
        return self.make_sample(f"{row['id']}/v{variant}", row["question"], row["ground_truth"], images=[img],
                                answer_type="text", meta={**meta, "family": "dynamath"})

    def smoke_rows(self, n=2, seed=0):
        # a seed question is one easy-vqa test question text; its variants are 2 different test
        # images asked that question (the answer may change between them, as DynaMath's do);
        # ceil(n / 2) seed questions, each asked as multiple choice or free text
        texts = smoke.question_texts()
        rng = random.Random(smoke.key_int("evals-smoke", self.name, seed))
        order = rng.sample(sorted(texts), len(texts))
        pools = {q: rng.sample(texts[q], len(texts[q])) for q in order}
        rows = []
        for j in range(max(1, -(-n // 2))):
            q = order[j % len(order)]
            if len(pools[q]) < 2:
                break                           # every test image of the texts used (n > ~1,200)
            mc = smoke.key_int(self.name, seed, j) % 2 == 0
            for v in (1, 2):
                answer, image_id, kind = pools[q].pop()
                question = q[0].upper() + q[1:]
                if mc:
                    opts = smoke.options(answer, kind, f"{self.name}/{seed}/{j}/{v}")
                    question += "\nChoices:\n" + "\n".join(f"({k}) {w}" for k, w in opts.items())
                rows.append({
                    "__split__": f"sample_variant{v}", "id": str(seed * 10000 + j + 1), "question": question,
                    "image": f"images/{j + 1}.png", "decoded_image": smoke.test_image(image_id),
                    "ground_truth": smoke.option_letter(opts, answer) if mc else answer,
                    "answer_type": "multiple choice" if mc else "text",
                    "subject": "Plane Geometry" if kind == "shape" else "Puzzle test",
                    "knowledge_level": "elementary school"})
        return rows

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
    scoring="VLMEvalKit DynaMath_auxeval: letter / float within 1e-3 / answer contains the text; average and worst case over variants",
    family="dynamath", required=("id", "question", "ground_truth", "answer_type"),
    group_by=("subject", "knowledge_level", "answer_type"),
    notes="--limit N keeps N seed questions with all their variants")]
