"""Offline construction of PTD-PO's privileged hints (arXiv 2606.07000 §2.3, App. C.1) as a
resumable job: ``python -m methods.ptdpo.hints --base-url URL --model NAME --data SET --out DIR``.

For each training question (image, question, verified answer a*) a strong model behind an
OpenAI-compatible endpoint (the paper: Qwen3-VL-235B-A22B-Thinking, served e.g. by ``vllm
serve``; Gemini-3.0-Pro as fallback) writes an answer-free hint under the system prompt below.
The paper's prompt (its Fig. 7) is not in the text: :data:`STRUCTURED_PROMPT` is written from the
constraints the paper states (docs/methods/ptdpo.md T1): consistent with a valid solution;
zero-spoiler (no final answer, no exact intermediate results, no answer-identifying names);
flag visual distractors and reasoning traps; concise imperative steps; spatial guidance plus
textual reasoning guidance. :data:`GENERIC_PROMPT` is Table 2's "w/o structured hint design"
(a general answer-free hint, no grounding or trap constraints).

Every hint goes through :func:`spoiler_reasons` (answer leakage, intermediate-number leakage,
full chain of thought, missing visual evidence); a rejected hint is regenerated with the
reasons as feedback, up to ``max_attempts`` times; a hint cut off by the token budget
(``finish_reason == "length"``) goes to the fallback endpoint when one is configured.

Durability: ``DIR/hints.jsonl`` gets one line per finished question (accepted, or rejected after
its last attempt), appended and fsynced as it completes; a rerun skips the ids already there, so
an interrupted job (crash, endpoint outage past the client's retries) never loses or redoes a
finished hint. ``DIR/meta.json`` pins the generator and prompt; a rerun with others is refused.
The answer a* is shown to the generator only; it never reaches the student (App. B).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from harness.durable import atomic_write_text
from harness.errors import DataError, RunError
from harness.jsonl import append_jsonl, iter_jsonl, repair_torn_tail
from harness.openai_client import ChatClient, image_part
from harness.types import Sample

__all__ = ["GENERIC_PROMPT", "HintJobConfig", "STRUCTURED_PROMPT", "generate_hints", "spoiler_reasons"]

STRUCTURED_PROMPT = """You are a tutor preparing a hint for a student who will solve the problem below on their own.
You are given the problem (and its image, if any) and its verified final answer. Work out a valid
solution path privately, then write a short hint that points the student along that path.

Rules:
1. Zero spoilers. Never state the final answer, never state any exact intermediate numerical
   result, and never name the object, option or value that identifies the answer.
2. Stay consistent with a valid solution direction: every step you point to must lead to the
   verified answer.
3. Ground the hint in the evidence: name the regions, objects and relations in the image (or the
   facts in the text) the solution depends on, and tell the student which visual distractors or
   misleading cues to ignore and which common reasoning traps to avoid.
4. Be concise: short imperative instructions; add detail only for steps that are visually
   ambiguous or logically hard. Do not write out a full solution or calculations.

Answer with exactly two labelled parts and nothing else:
Spatial guidance: <where to look and what to ignore; "none" for a question without an image>
Reasoning guidance: <the high-level steps to take, without their results>"""

GENERIC_PROMPT = """You are a tutor. Given a problem and its verified final answer, write a short
hint that helps a student solve it without revealing the final answer.

Answer with exactly two labelled parts and nothing else:
Spatial guidance: <anything worth noting, or "none">
Reasoning guidance: <a general hint>"""

_NUMBER = re.compile(r"(?<![A-Za-z_])-?\d+(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?")
_FRAC = re.compile(r"\\d?frac\s*\{\s*(-?[\d.]+)\s*\}\s*\{\s*(-?[\d.]+)\s*\}")
_SOLUTION_WORDS = re.compile(r"\\boxed|final answer|the answer is|answer\s*[:=]|therefore,? the (?:result|value) is",
                             re.IGNORECASE)
_CHOICE = re.compile(r"^\(?([A-Ha-h])\)?\.?$")


@dataclass(frozen=True)
class FilterRules:
    """Thresholds of the rule-based quality check ([A]: the paper names the checks, not the rules)."""

    max_words: int = 120
    """A hint longer than this is treated as a full chain of thought."""
    max_equations: int = 3
    """More ``=`` signs than this is a worked calculation."""
    trivial_numbers: float = 10
    """Integers with |n| <= this are never counted as leaked intermediate results ("divide by 2")."""
    known_constants: tuple[float, ...] = (60, 90, 100, 180, 360)
    """Facts, not results: right and straight angles, a full turn, percent, minutes an hour."""


def _numbers(text: str) -> list[float]:
    """Every number in ``text`` (integers, decimals, a/b and \\frac{a}{b} as their value)."""
    out: list[float] = []
    text = _FRAC.sub(lambda m: f" {m.group(1)}/{m.group(2)} ", text.replace(",", ""))
    for tok in _NUMBER.findall(text):
        try:
            if "/" in tok:
                a, b = (float(x) for x in tok.split("/"))
                out.append(a / b if b else float("inf"))
            else:
                out.append(float(tok))
        except ValueError:
            continue
    return out


def _norm(text: str) -> str:
    text = text.lower().replace("\\left", "").replace("\\right", "").replace("\\dfrac", "\\frac")
    text = re.sub(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"(\1)/(\2)", text)
    return re.sub(r"[\s$\\{}()\[\]]", "", text)


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def _prose_numbers(text: str) -> list[float]:
    """The numbers of ``text`` that stand as words (not inside a formula such as ``x^2+2``, not a
    list marker at the start of a line)."""
    out = []
    for m in re.finditer(r"(?<![\w^_*/+\-=<>.(){}\\])-?\d+(?:\.\d+)?(?![\w^_*/+\-=<>(){}\\]|\.\d)", text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        if not text[line_start:m.start()].strip() and re.match(r"[.)]\s", text[m.end():m.end() + 2]):
            continue  # an enumeration marker ("2. Check ...")
        out.append(float(m.group()))
    return out


def answer_leaks(hint: str, answer: str, trivial: float = 10) -> bool:
    """Whether ``hint`` states ``answer``: as a number (any form: 0.5, 1/2, \\frac{1}{2}), as an
    option letter named as a choice, as a word or phrase, or as the same LaTeX expression. A
    small integer answer (|n| <= ``trivial``) counts only where it stands as a word, not inside a
    formula (``x^2+2`` does not state the answer 2; "there are 2 cases" does)."""
    answer = str(answer).strip()
    if not answer:
        return False
    choice = _CHOICE.match(answer)
    if choice:
        letter = choice.group(1)
        return bool(re.search(rf"(?:option|choice|answer|choose|pick|select)\s*\(?{letter}\)?(?![A-Za-z])|\({letter}\)",
                              hint, re.IGNORECASE))
    gold = _numbers(answer)
    if len(gold) == 1 and _norm(answer).lstrip("-").replace(".", "").replace("/", "").replace("frac", "").isdigit():
        small = gold[0] == int(gold[0]) and abs(gold[0]) <= trivial and "/" not in answer
        return any(_same(gold[0], x) for x in (_prose_numbers(hint) if small else _numbers(hint)))
    if re.fullmatch(r"[A-Za-z][A-Za-z \-']*", answer):
        return bool(re.search(rf"(?<![A-Za-z]){re.escape(answer)}(?![A-Za-z])", hint, re.IGNORECASE))
    target = _norm(answer)
    return len(target) >= 2 and target in _norm(hint)


def spoiler_reasons(hint: str, answer: str, question: str, *, has_image: bool = False, structured: bool = True,
                    rules: FilterRules = FilterRules()) -> list[str]:
    """Why ``hint`` must be rejected (empty: accepted), App. C.1's four checks:
    ``answer`` (it contains the final answer), ``intermediate`` (a number the question does not
    contain and that is not trivial), ``full_cot`` (too long, a worked calculation, or a stated
    result), ``no_visual_evidence`` (structured hint for an image question without spatial
    guidance)."""
    reasons = []
    if not hint.strip():
        return ["empty"]
    if answer_leaks(hint, answer, rules.trivial_numbers):
        reasons.append("answer")
    given = _numbers(question)
    leaked = [x for x in _numbers(hint)
              if not any(_same(x, g) for g in (*given, *rules.known_constants))
              and not (x == int(x) and abs(x) <= rules.trivial_numbers)]
    if leaked:
        reasons.append("intermediate")
    if (len(hint.split()) > rules.max_words or hint.count("=") > rules.max_equations
            or _SOLUTION_WORDS.search(hint)):
        reasons.append("full_cot")
    if structured and has_image:
        m = re.search(r"spatial guidance\s*:\s*(.*?)(?:reasoning guidance\s*:|$)", hint, re.IGNORECASE | re.DOTALL)
        if m is None or not m.group(1).strip() or m.group(1).strip().lower().startswith("none"):
            reasons.append("no_visual_evidence")
    return reasons


def strip_reasoning(text: str) -> str:
    """The hint without a thinking model's ``<think>...</think>`` block, if the server left it in."""
    return re.sub(r"^.*?</think>", "", text, flags=re.DOTALL).strip() if "</think>" in text else text.strip()


@dataclass
class HintJobConfig:
    base_url: str
    model: str
    """§2.3 / App. C.1: Qwen3-VL-235B-A22B-Thinking (any served model works)."""
    fallback_base_url: Optional[str] = None
    fallback_model: Optional[str] = None
    """App. C.1: Gemini-3.0-Pro when the first model does not finish within the budget."""
    structured: bool = True
    """The structured prompt (the paper); False: Table 2's generic answer-free hint."""
    max_tokens: int = 16384
    """App. C.1: generation budget 16,384 tokens [P]."""
    temperature: float = 0.7
    """Not stated [A]."""
    max_attempts: int = 3
    """Generations per question before it is recorded as rejected [A: the paper regenerates, no count]."""
    timeout_s: float = 600.0
    max_retries: int = 8
    rules: FilterRules = FilterRules()

    @property
    def prompt(self) -> str:
        return STRUCTURED_PROMPT if self.structured else GENERIC_PROMPT

    def identity(self) -> dict[str, Any]:
        """What a rerun must share with the run that wrote the file (as JSON reads it back)."""
        return json.loads(json.dumps({"model": self.model, "fallback_model": self.fallback_model, "structured": self.structured,
                "prompt_sha256": hashlib.sha256(self.prompt.encode()).hexdigest(), "rules": asdict(self.rules),
                "max_tokens": self.max_tokens}))


def _question(sample: Sample) -> str:
    return str(sample.meta.get("question") or sample.prompt)


def _messages(cfg: HintJobConfig, sample: Sample, feedback: Optional[list[str]]) -> list[dict[str, Any]]:
    text = f"Problem:\n{_question(sample)}\n\nVerified final answer: {sample.answer}"
    if sample.choices:
        text = text.replace("\n\nVerified", "\n\nOptions: " + "; ".join(f"{k}. {v}" for k, v in sample.choices.items())
                            + "\n\nVerified")
    if feedback:
        text += ("\n\nA previous hint was rejected (" + ", ".join(feedback) + "). Write a new one that follows every "
                 "rule: no answer, no intermediate results, no worked solution; name the visual evidence.")
    content: Any = [*(image_part(im) for im in sample.images), {"type": "text", "text": text}] if sample.images else text
    return [{"role": "system", "content": cfg.prompt}, {"role": "user", "content": content}]


def _done_ids(path: Path) -> set[str]:
    if not path.exists():
        return set()
    repair_torn_tail(path)
    return {rec["id"] for rec in iter_jsonl(path, torn_tail=True) if "id" in rec}


def _check_meta(out: Path, cfg: HintJobConfig) -> None:
    meta = out / "meta.json"
    ident = cfg.identity()
    if meta.exists():
        old = json.loads(meta.read_text())
        if old != ident:
            diff = sorted(k for k in set(old) | set(ident) if old.get(k) != ident.get(k))
            raise RunError(f"{out}: hints were generated with other settings ({', '.join(diff)}); use another --out")
    else:
        atomic_write_text(meta, json.dumps(ident, indent=2, sort_keys=True))


def _one(cfg: HintJobConfig, clients: list[ChatClient], sample: Sample) -> dict[str, Any]:
    """Generate, check and regenerate the hint of one question."""
    feedback: Optional[list[str]] = None
    rec: dict[str, Any] = {}
    for attempt in range(1, cfg.max_attempts + 1):
        text, finish, used = "", "", clients[0].model
        for client in clients:  # the fallback only when a generation does not fit the budget
            text, finish = client.chat(_messages(cfg, sample, feedback), max_tokens=cfg.max_tokens,
                                       temperature=cfg.temperature)
            used = client.model
            if finish != "length":
                break
        hint = strip_reasoning(text)
        reasons = ["truncated"] if finish == "length" else spoiler_reasons(
            hint, str(sample.answer), _question(sample), has_image=bool(sample.images), structured=cfg.structured,
            rules=cfg.rules)
        rec = {"id": sample.id, "hint": hint, "status": "rejected" if reasons else "accepted", "attempts": attempt,
               "reasons": reasons, "model": used}
        if not reasons:
            break
        feedback = reasons
    return rec


def generate_hints(cfg: HintJobConfig, samples: Iterable[Sample], out: str | Path,
                   clients: Optional[list[ChatClient]] = None) -> dict[str, int]:
    """Write (or resume) ``out/hints.jsonl`` for ``samples``; returns counts of this call
    (``done_before``, ``accepted``, ``rejected``). ``clients`` replaces the endpoints (tests)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_meta(out, cfg)
    path = out / "hints.jsonl"
    done = _done_ids(path)
    if clients is None:
        kw = dict(timeout_s=cfg.timeout_s, max_retries=cfg.max_retries)
        clients = [ChatClient(cfg.base_url, cfg.model, **kw)]
        if cfg.fallback_base_url and cfg.fallback_model:
            clients.append(ChatClient(cfg.fallback_base_url, cfg.fallback_model, **kw))
    counts = {"done_before": 0, "accepted": 0, "rejected": 0}
    for sample in samples:
        if sample.id in done:
            counts["done_before"] += 1
            continue
        if not sample.answer:
            raise DataError(sample.id, None, "answer", "no verified answer: the hint generator needs one")
        rec = _one(cfg, clients, sample)
        append_jsonl(path, rec, fsync=True)
        done.add(sample.id)
        counts[rec["status"]] += 1
    return counts


def main(argv: Optional[list[str]] = None) -> int:
    from harness.cli_errors import run_reporting_errors
    from harness.data import load_training_set

    p = argparse.ArgumentParser(prog="python -m methods.ptdpo.hints", description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", required=True, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    p.add_argument("--model", required=True)
    p.add_argument("--fallback-base-url")
    p.add_argument("--fallback-model")
    p.add_argument("--data", required=True, help="training set (harness.data.load_training_set)")
    p.add_argument("--split", default="train")
    p.add_argument("--limit", type=int)
    p.add_argument("--out", required=True, help="output directory (rerun to resume)")
    p.add_argument("--generic", action="store_true", help="Table 2's generic prompt (w/o structured hint design)")
    p.add_argument("--max-attempts", type=int, default=3)
    args = p.parse_args(argv)

    def go() -> int:
        cfg = HintJobConfig(args.base_url, args.model, args.fallback_base_url, args.fallback_model,
                            structured=not args.generic, max_attempts=args.max_attempts)
        counts = generate_hints(cfg, load_training_set(args.data, args.split, args.limit), args.out)
        print(json.dumps(counts))
        return 0

    return run_reporting_errors("methods.ptdpo.hints", go)


if __name__ == "__main__":
    sys.exit(main())

