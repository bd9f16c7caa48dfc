"""VLMEvalKit's judge protocol per benchmark, run with ``evals.judge.Judge`` as its ``model``.

``judge_score(bench, sample, response, judge) -> (extracted, correct, protocol)``. Each protocol is
VLMEvalKit's own function where it has one (its prompts and in-context examples, its retries and
temperatures), given the *whole* response as the prediction, as VLMEvalKit gives it:

- multiple choice (MMStar, MMMU-Pro, We-Math): ``extract_answer_from_item`` (``can_infer`` first,
  else the judge's option matching, 3 tries; We-Math's own prompt). Where VLMEvalKit then draws a
  *random* option, we record no answer (score 0).
- HallusionBench: ``YOrN_Extraction``, else ``YOrN_auxeval`` (5 tries).
- MathVista: ``MathVista_auxeval`` (``post_check`` prefetch, else the extraction prompt with its
  5 in-context examples), then ``post_check``.
- MathVerse: ``MathVerse_auxeval_extract`` then ``MathVerse_auxeval_score`` (two stages).
- MathVision: its prefetch (``can_infer`` / ``is_equal``, without ``eval``), else its extraction
  prompt, then the same check.
- DynaMath: ``DynaMath_auxeval`` with the judge.
- LogicVista: ``LogicVista_auxeval``.
- any other benchmark: the generic extraction prompt (``evals.judge.PROMPT``), then the
  benchmark's own rule on the extracted answer.
The question given to the judge is the sample's prompt (question, options and our instruction).
"""
from __future__ import annotations

import contextlib
import io
from typing import Any

from harness.types import Sample

from evals import vlmeval_rules as vr
from evals.judge import FAIL_MSG, Judge

_MAX_PRED = 20_000


def _pred(response: str) -> str:
    return (response or "")[-_MAX_PRED:]


def _choices(sample: Sample) -> dict[str, str]:
    if sample.choices:
        return {k: str(v) for k, v in sample.choices.items()}
    return {k: k for k in sample.meta.get("letters") or "ABCDE"}


def mcq(sample: Sample, response: str, judge: Judge, dataset: str | None = None) -> tuple[str | None, bool]:
    item: dict[str, Any] = {"question": sample.prompt, "prediction": _pred(response), "answer": sample.answer,
                            **_choices(sample)}
    out = vr.modules().multiple_choice.extract_answer_from_item(judge, item, dataset_name=dataset)
    if str(out.get("log", "")).startswith("Failed to predict, thus randomly generate one"):
        return None, False
    opt = out.get("opt")
    return opt, bool(opt) and opt != "Z" and opt == sample.answer


def yorn(sample: Sample, response: str, judge: Judge) -> tuple[str | None, bool]:
    ext = vr.yorn_extraction(_pred(response))
    if ext == "Unknown":
        ext = vr.modules().yorn.YOrN_auxeval(judge, {"question": sample.prompt, "prediction": _pred(response)})
    ans = None if ext == "Unknown" else ext.lower()
    return ans, ans == (sample.answer or "").strip().lower()


def mathvista(sample: Sample, response: str, judge: Judge) -> tuple[str | None, bool]:
    from evals.vlmeval_families import mathvista_line

    line = mathvista_line(sample, _pred(response))
    line["question"] = sample.prompt
    res = vr.modules().mathvista.MathVista_auxeval(judge, line)["res"]
    line["res"] = res
    return (str(res) if res not in (None, "") else None), vr.mathvista_post_check(line) is True


def mathverse(sample: Sample, response: str, judge: Judge) -> tuple[str | None, bool]:
    mv = vr.modules().mathverse
    line = {"prediction": _pred(response), "question_for_eval": sample.prompt, "answer": sample.answer}
    line["extract"] = mv.MathVerse_auxeval_extract(judge, line)["extract"]
    return (line["extract"] or None), bool(mv.MathVerse_auxeval_score(judge, line)["score"])


def mathvision(sample: Sample, response: str, judge: Judge) -> tuple[str | None, bool]:
    from evals.vlmeval_families import check_mathvision

    pred = _pred(response)
    if check_mathvision(pred, sample):                   # VLMEvalKit's prefetch succeeds
        return pred if not sample.choices else vr.can_infer(pred, sample.choices), True
    prompt = vr.mathv_prompt(sample.prompt, pred, list((sample.choices or {}).values()))
    res = ""
    for i in range(5):                                   # MATH_V_auxeval: 5 tries, temperature 0.5 i
        res = judge.generate(prompt, temperature=i * 0.5)
        if FAIL_MSG not in res:
            break
        res = ""
    return (res or None), bool(res) and bool(check_mathvision(res, sample))


def dynamath(sample: Sample, response: str, judge: Judge) -> tuple[str | None, bool]:
    from evals.vlmeval_families import dynamath_type

    out = vr.dynamath_auxeval(_pred(response), sample.answer or "", dynamath_type(sample), judge=judge.generate)
    ext = out.get("extracted")
    return (None if ext is None else str(ext)), bool(out.get("correct"))


def logicvista(sample: Sample, response: str, judge: Judge) -> tuple[str | None, bool]:
    with contextlib.redirect_stdout(io.StringIO()):     # LogicVista_auxeval prints its prompt
        out = vr.modules().logicvista.LogicVista_auxeval(judge, {"question": sample.prompt,
                                                                 "prediction": _pred(response),
                                                                 "answer": sample.answer})
    return (out.get("res") or None), bool(out.get("hit"))


def judge_score(bench: Any, sample: Sample, response: str, judge: Judge) -> tuple[str | None, float, str]:
    """``(extracted, score, protocol name)`` of ``response`` under the judge protocol."""
    ext, score, protocol = _judge_score(bench, sample, response, judge)
    return ext, float(score), protocol


def _judge_score(bench: Any, sample: Sample, response: str, judge: Judge) -> tuple[str | None, Any, str]:
    name = bench.name
    family = sample.meta.get("family", bench.family)
    if name.startswith("mathverse"):
        return (*mathverse(sample, response, judge), "vlmeval:MathVerse")
    if name.startswith("logicvista"):
        return (*logicvista(sample, response, judge), "vlmeval:LogicVista")
    if family == "vlm_choice":
        dataset = "WeMath" if name.startswith("wemath") else None
        return (*mcq(sample, response, judge, dataset), "vlmeval:" + (dataset or "MCQ"))
    if family == "vlm_yorn":
        return (*yorn(sample, response, judge), "vlmeval:YOrN")
    if family == "mathvista":
        return (*mathvista(sample, response, judge), "vlmeval:MathVista")
    if family == "mathvision":
        return (*mathvision(sample, response, judge), "vlmeval:MathVision")
    if family == "dynamath":
        return (*dynamath(sample, response, judge), "vlmeval:DynaMath")
    ans = judge.extract(sample.prompt, response)
    if ans is None:
        return None, 0.0, "generic"
    res = bench.score(sample, response, ans, use_extracted=True)
    return res["extracted"], res["score"], "generic"
