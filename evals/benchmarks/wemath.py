"""We-Math (Qiao et al., 2025), testmini: 1,740 multiple-choice questions forming 525 multi-step
problems, each decomposed into one-step sub-problems by knowledge concept (``key`` =
``2steps_1``, ``2steps_2``, ``2steps_multi``, ``3steps_1`` ...).

Metrics (VLMEvalKit's ``wemath.py``), per multi-step problem with sub-problems s_i and the
composite problem m:
  CM (complete mastery, strict): all s_i and m right;  IG (inadequate generalisation): all s_i
  right, m wrong;  IK (insufficient knowledge): some s_i wrong, m wrong;  RM (rote memorisation):
  some s_i wrong (strict) / all s_i wrong (loose), m right.
  Score (strict) = (N - 0.5 IG - RM_strict - IK) / N,  Score (loose) = (N - 0.5 IG - RM_loose - IK) / N;
  RM rates are RM / (CM + RM). ``accuracy`` is the plain per-question accuracy.
"""
from __future__ import annotations

import re
from collections import defaultdict

from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import parse_inline_options
from evals.fixtures import make_image


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
        rows = []
        for p in range(max(1, n // 2) + 1):     # one 2-step and one 3-step problem at least
            steps = 2 if p % 2 == 0 else 3
            for key in [f"{steps}steps_{i}" for i in range(1, steps + 1)] + [f"{steps}steps_multi"]:
                rows.append({
                    "ID": f"{steps}steps_{p + 1}", "split": "testmini", "knowledge concept": "Angles",
                    "question": f"In the figure, find angle {key}.",
                    "option": "A. 30°; B. 45°; C. 60°; D. 90°; E. No correct answer",
                    "answer": "ABCD"[len(rows) % 4], "key": key, "question number": len(rows) + 1,
                    "knowledge concept description": "Angle measures", "image_path": make_image(seed * 100 + len(rows)),
                })
        return rows

    def metric_units(self, records):
        units = super().metric_units(records)
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
    family="choice", headline="score_strict",
    required=("ID", "question", "answer", "key", "image_path"), group_by=("steps",),
    notes="VOLD (VLMEvalKit) reports Score (Strict); REOPOLD and PTD-PO (NoisyRollout / PAPO "
          "protocols) report per-question accuracy, so their columns map to 'accuracy'")]
