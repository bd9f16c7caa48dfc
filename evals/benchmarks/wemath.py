"""We-Math (Qiao et al., 2025), testmini: 1,740 multiple-choice questions forming 525 multi-step
problems, each decomposed into one-step sub-problems by knowledge concept (``key`` =
``2steps_1``, ``2steps_2``, ``2steps_multi``, ``3steps_1`` ...).

Metrics (VLMEvalKit's ``wemath.py``), per multi-step problem with sub-problems s_i and the
composite problem m:
  CM (complete mastery, strict): all s_i and m right;  IG (inadequate generalisation): all s_i
  right, m wrong;  IK (insufficient knowledge): some s_i wrong, m wrong;  RM (rote memorisation):
  some s_i wrong (strict) / all s_i wrong (loose), m right.
  Score (strict) = (N - 0.5 IG - RM_strict - IK) / N,  Score (loose) = (N - 0.5 IG - RM_loose - IK) / N;
  RM rates are RM / (CM + RM). ``accuracy`` is the plain per-question accuracy. ``S1`` / ``S2`` /
  ``S3`` are VLMEvalKit's One-step / Two-step / Three-step accuracies: S1 over the one-step
  sub-problems, S2 (S3) over the composite questions of two-step (three-step) problems only.
  N is the number of complete problems (VLMEvalKit divides by 525, the full testmini's count).
Smoke items: one easy-vqa test image per multi-step problem: colour, shape (and straight sides) as
one-step sub-problems, a composite question that needs them all (evals/smoke.py).
"""
from __future__ import annotations

import random
import re
from collections import defaultdict

from evals import smoke
from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import parse_inline_options


class WeMath(Benchmark):
    def limit_key(self, sample):
        return sample.meta["problem"]

    def to_sample(self, row, idx, source, split=None):
        img = self.image(row["image_path"], source, idx, "image_path")
        choices = parse_inline_options(row.get("option") or "")
        key = row["key"]
        return self.make_sample(f"{row['ID']}/{key}", row["question"], row["answer"], images=[img],
                                choices=choices or None, answer_type="multiple_choice",
                                meta={"problem": str(row["ID"]), "key": key,
                                      "steps": key.split("steps")[0] + "-step" if "steps" in key else key,
                                      "concept": row.get("knowledge concept"),
                                      "letters": list(choices or "ABCDEFG")})

    def smoke_rows(self, n=2, seed=0):
        # one easy-vqa test image per multi-step problem (whole problems until there are >= n
        # rows). 2-step: the colour, the shape, then the composite "which option names both";
        # 3-step adds the number of straight sides, and the composite asks colour and sides.
        ids = smoke.full_ids()
        rng = random.Random(smoke.key_int("evals-smoke", self.name, seed))
        attrs = smoke.attributes()
        rows = []
        for p, image_id in enumerate(rng.sample(ids, len(ids))):
            if len(rows) >= max(n, 1):
                break
            color, shape = attrs[image_id]["color"], attrs[image_id]["shape"]
            steps = 2 if p % 2 == 0 else 3
            key = f"{self.name}/{seed}/{p}"
            sides = smoke.SIDES[shape]
            questions = [("What is the color of the shape?", color,
                          smoke.options(color, "color", f"{key}/1", k=4)),
                         ("What shape is in the image?", shape, smoke.options(shape, "shape", f"{key}/2", k=4))]
            if steps == 3:
                words = [str(sides)] + [str(x) for x in (0, 3, 4, 5) if x != sides]
                rng.shuffle(words)
                questions.append(("How many straight sides does the shape have?", str(sides),
                                  {"ABCD"[k]: w for k, w in enumerate(words)}))
            second = shape if steps == 2 else str(sides)
            other_c = rng.choice([c for c in smoke.EASY_VQA_COLORS if c != color])
            other_s = rng.choice([x for x in (questions[1][2] if steps == 2 else questions[2][2]).values()
                                  if x != second])
            combos = [f"{color} {second}", f"{other_c} {second}", f"{color} {other_s}", f"{other_c} {other_s}"]
            if steps == 3:
                combos = [c.replace(" ", ", ") for c in combos]
            truth = combos[0]
            rng.shuffle(combos)
            questions.append(("Which option names both the color and the shape of the figure?" if steps == 2 else
                              "What is the color of the shape, and how many straight sides does it have?", truth,
                              {"ABCD"[k]: w for k, w in enumerate(combos)}))
            keys = [f"{steps}steps_{k}" for k in range(1, steps + 1)] + [f"{steps}steps_multi"]
            for k, (q, answer, opts) in zip(keys, questions):
                rows.append({
                    "ID": f"{steps}steps_{seed * 10000 + p + 1}", "split": "testmini",
                    "knowledge concept": "Shapes and colors", "question": q,
                    "option": "; ".join(f"{x}. {w}" for x, w in opts.items()) + "; E. No correct answer",
                    "answer": smoke.option_letter(opts, answer), "key": k, "question number": len(rows) + 1,
                    "knowledge concept description": "Naming a figure's colour, shape and number of sides",
                    "image_path": smoke.test_image(image_id),
                })
        return rows

    def metric_units(self, records):
        units = super().metric_units(records)
        units["S1"] = [r["score"] for r in records if not r["meta"]["key"].endswith("multi")]
        units["S2"] = [r["score"] for r in records if r["meta"]["key"] == "2steps_multi"]
        units["S3"] = [r["score"] for r in records if r["meta"]["key"] == "3steps_multi"]
        groups: dict[str, dict[str, dict]] = defaultdict(dict)
        for r in records:
            groups[r["meta"]["problem"]][r["meta"]["key"]] = r
        strict, loose, ig, ik, cm_s, cm_l, rm_s, rm_l = ([] for _ in range(8))
        for keys in groups.values():
            multi = next((k for k in keys if k.endswith("multi")), None)
            if multi is None:
                continue
            steps = int(re.match(r"(\d+)", multi).group(1))
            subs = [keys.get(f"{steps}steps_{i}") for i in range(1, steps + 1)]
            if any(s is None for s in subs):
                continue                       # incomplete problem (e.g. under --limit): skipped
            draws = min(len(r["correct"]) for r in subs + [keys[multi]])
            acc = defaultdict(float)
            for j in range(draws):
                sub_ok = [s["correct"][j] for s in subs]
                m_ok = keys[multi]["correct"][j]
                c = {"ig": all(sub_ok) and not m_ok, "ik": not all(sub_ok) and not m_ok,
                     "cm_s": all(sub_ok) and m_ok, "cm_l": any(sub_ok) and m_ok,
                     "rm_s": not all(sub_ok) and m_ok, "rm_l": not any(sub_ok) and m_ok}
                for name, v in c.items():
                    acc[name] += v / draws
                acc["m"] += m_ok / draws
            ig.append(acc["ig"]); ik.append(acc["ik"]); cm_s.append(acc["cm_s"]); cm_l.append(acc["cm_l"])
            strict.append(1 - 0.5 * acc["ig"] - acc["rm_s"] - acc["ik"])
            loose.append(1 - 0.5 * acc["ig"] - acc["rm_l"] - acc["ik"])
            if acc["m"] > 0:                   # RM / (CM + RM) is over problems whose m is right
                rm_s.append(acc["rm_s"] / acc["m"]); rm_l.append(acc["rm_l"] / acc["m"])
        units.update({"score_strict": strict, "score_loose": loose, "IG": ig, "IK": ik,
                      "CM_strict": cm_s, "CM_loose": cm_l, "RM_strict": rm_s, "RM_loose": rm_l})
        return units


BENCHMARKS = [WeMath(
    name="wemath", title="We-Math (testmini)", hf_id="We-Math/We-Math", split="testmini", size=1740,
    tables=("VOLD Tab.1-3,5: WeMath (score_strict, VLMEvalKit)", "REOPOLD visual table (§5.2): WeMath",
            "PTD-PO Tab.1,2,4: We-Math"),
    scoring="option letter; four-dimensional metrics over each problem's knowledge-concept decomposition",
    family="vlm_choice", headline="score_strict",
    required=("ID", "question", "answer", "key", "image_path"),
    notes="VOLD (VLMEvalKit) reports Score (Strict); REOPOLD and PTD-PO (NoisyRollout / PAPO "
          "protocols) report per-question accuracy, so their columns map to 'accuracy'")]
