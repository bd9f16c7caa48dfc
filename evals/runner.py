"""Run benchmarks: generate with a ``RolloutEngine``, score, append one JSON record per sample as
it completes, and summarise with bootstrap confidence intervals.

Layout of ``out_dir``::

    <benchmark>/records.jsonl   one record per sample (id, prompt_hash, responses, extracted,
                                correct, score, rule_scores, time_s, meta; with a judge also
                                judge_scores and judge: protocol, extracted, and every call's
                                model, prompt sha256 and raw output); appended and flushed per
                                sample as it is scored, synced to disk per batch; in generation
                                order (length-sorted batches), so read it by id
    <benchmark>/config.json     the settings the records were made with (a rerun must match)
    <benchmark>/vlmeval/<model>_<Dataset>.tsv   the predictions in VLMEvalKit's prediction-file
                                layout (evals/vlmeval_io.py), for VLMEvalKit's own evaluator
    <benchmark>/summary.json    {benchmark, model, source, n, accuracy, ci95, metrics, metric_ci95,
                                extractor, mode, k, rule_metrics, judge_metrics, ...}; values in percent

A rerun skips every sample whose id *and* prompt hash are already recorded, so an interrupted
evaluation resumes where it stopped and a finished one is only re-summarised.
"""
from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from harness.train_config import VLLMSettings

from harness.durable import atomic_write_text
from harness.run_dir import require_directory
from harness.jsonl import JsonlAppender, read_jsonl, repair_torn_tail
from harness.rollout.base import RolloutEngine
from harness.types import Sample, SamplingParams

from evals import prompts, scoring
from evals.benchmarks import get_benchmark, resolve_names
from evals.benchmarks.base import Benchmark
from evals.stats import bootstrap_ci, pass_at_k


class EvalConfigError(ValueError):
    """An output directory holds records made with different settings."""


@dataclass
class RunSettings:
    model: str
    source: str
    mode: str
    k: int
    temperature: float
    top_p: float
    max_new_tokens: int
    system: str | None
    seed: int
    extractor: str
    tool_rounds: int = 0
    """Tool calls executed per response at most (multi-turn evaluation); 0: single-turn."""


def prompt_hash(sample: Sample) -> str:
    """sha256 over the system prompt, the user prompt and the images' pixels (first 16 hex)."""
    h = hashlib.sha256()
    h.update((sample.system or "").encode())
    h.update(b"\x00")
    h.update(sample.prompt.encode())
    for img in sample.images:
        h.update(f"{img.mode}{img.size}".encode())
        h.update(img.tobytes())
    return h.hexdigest()[:16]


def read_records(path: Path) -> list[dict]:
    """Records of a jsonl file (none when missing); a truncated last line (a crash mid-write) is
    ignored, any other bad line raises DataError naming file:line."""
    return read_jsonl(path, torn_tail=True, missing_ok=True)


def make_engine(model: str, engine: str = "hf", *, batch_size: int = 8, device: str = "cpu",
                dtype: str = "float32", vllm: "VLLMSettings | None" = None) -> RolloutEngine:
    """A rollout engine for ``model`` (path, hub id, or ``smoke:<kind>`` for a tiny smoke model).
    ``vllm``: the vLLM engine's settings (``harness.train_config.VLLMSettings``; engine ``vllm``);
    vLLM places the model itself (its CUDA or CPU build), so ``device`` can only be cpu / cuda."""
    from harness.models import resolve_model_name
    model = resolve_model_name(model)
    if engine == "hf":
        from harness.models import load_model
        from harness.rollout.hf import HFRolloutEngine
        bundle = load_model(model, dtype=dtype, device=device, trainable=False)
        return HFRolloutEngine(bundle, batch_size=batch_size)
    if engine == "vllm":
        from harness.rollout.vllm import VLLMRolloutEngine
        from harness.train_config import VLLMSettings
        if device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device {device!r} with engine vllm: vLLM chooses its GPUs itself; select them with "
                             "CUDA_VISIBLE_DEVICES (and the tensor-parallel size)")
        try:  # raises ImportError naming the gpu extra without vLLM
            return VLLMRolloutEngine(model, dtype=dtype, **(vllm or VLLMSettings()).engine_kwargs())
        except ImportError as e:
            raise ValueError(f"engine 'vllm' is not available here ({e})") from e
    raise ValueError(f"unknown engine {engine!r}; known: hf, vllm")


def summarize(bench: Benchmark, records: list[dict], settings: RunSettings, n_resamples: int = 2000) -> dict:
    units = bench.metric_units(records)
    if settings.k > 1:
        units[f"pass@{settings.k}"] = [pass_at_k(len(r["correct"]), sum(r["correct"]), settings.k)
                                       for r in records]
    metrics = {name: 100.0 * sum(v) / len(v) for name, v in units.items() if v}
    metric_ci = {name: [100.0 * x for x in bootstrap_ci(v, n_resamples=n_resamples)]
                 for name, v in units.items() if v}
    extractors = sorted({r.get("extractor", settings.extractor) for r in records})
    return {
        "benchmark": bench.name, "model": settings.model, "source": settings.source,
        "hf_id": bench.hf_id, "config": bench.config, "split": ",".join(bench.splits),
        "revision": bench.revision(), "n": len(records),
        "revision_sha": bench.revision_sha() if settings.source == "hub" else None,
        "accuracy": metrics.get("accuracy", float("nan")),
        "ci95": metric_ci.get("accuracy", [float("nan"), float("nan")]),
        "headline": bench.headline, "metrics": metrics, "metric_ci95": metric_ci,
        "extractor": extractors[0] if len(extractors) == 1 else extractors,
        "mode": settings.mode, "k": settings.k, "temperature": settings.temperature, "top_p": settings.top_p,
        "max_new_tokens": settings.max_new_tokens, "system": settings.system,
        "rule_metrics": side_by_side(bench, records, "rule"), "judge_metrics": side_by_side(bench, records, "judge"),
    }


def _read_settings(path: Path, records: Path) -> dict | None:
    """The settings saved in ``path``; None when there are none (or only a torn file and no records
    yet, which is as good as none). Unreadable settings next to records: an error naming the file."""
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(old, dict):
            raise ValueError(f"expected a JSON object, got {type(old).__name__}")
        return old
    except (OSError, UnicodeDecodeError, ValueError) as e:
        if not records.exists() or records.stat().st_size == 0:
            return None
        raise EvalConfigError(
            f"{path}: unreadable ({type(e).__name__}: {e}); the records next to it were made with unknown "
            f"settings: delete {path.parent} or use another --out directory") from None


def _check_settings(path: Path, settings: RunSettings) -> None:
    cur = asdict(settings)
    old = _read_settings(path, path.with_name("records.jsonl"))
    if old is not None:
        # a setting added after the records were made (e.g. tool_rounds) reads as its default
        defaults = {f.name: f.default for f in fields(RunSettings) if f.default is not MISSING}
        old = {**{k: v for k, v in defaults.items() if k not in old}, **old}
        diff = {k: (old.get(k), v) for k, v in cur.items() if old.get(k) != v}
        if diff:
            raise EvalConfigError(
                f"{path.parent} holds records made with other settings "
                f"({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in diff.items())}); "
                f"use another --out directory or delete it")
    else:
        atomic_write_text(path, json.dumps(cur, indent=2))


def _with_tools(engine: Any, tools: tuple[str, ...] | list[str], tool_rounds: int) -> Any:
    """``engine`` wrapped for multi-turn tool use when ``tool_rounds`` > 0 and it can continue rows
    (the HF and vLLM engines); otherwise ``engine`` itself."""
    if not tool_rounds or not hasattr(engine, "continue_rows"):
        return engine
    from harness.rollout.multiturn import MultiTurnEngine
    return MultiTurnEngine(engine, list(tools), tool_rounds)


def run(model: str, benchmarks: str | list[str], *, out_dir: str | Path, limit: int | None = None,
        engine: str | RolloutEngine = "hf", source: str | Path = "hub", mode: str = "greedy", k: int = 1,
        temperature: float = 0.0, top_p: float = 1.0, max_new_tokens: int = 1024,
        judge_url: str | None = None, judge_model: str = "gpt-4o-mini", judge_api_key: str | None = None,
        judge_api_key_env: str | None = "OPENAI_API_KEY", judge_timeout_s: float = 60.0, judge_retries: int = 6,
        batch_size: int = 8, system: str | None = None, seed: int = 0, device: str = "cpu",
        dtype: str = "float32", smoke_n: int = 2, progress: bool = True,
        on_record: Callable[[dict], None] | None = None, tool_rounds: int = 0,
        tools: tuple[str, ...] | list[str] = ("crop_image",), sort_by_length: bool = True,
        vllm: "VLLMSettings | None" = None) -> dict[str, dict]:
    """Evaluate ``model`` on ``benchmarks``; returns {benchmark: summary} (also written to disk).

    ``mode="greedy"`` is Acc@1 (temperature 0, k 1); ``mode="sample"`` draws ``k`` responses per
    sample at ``temperature`` / ``top_p`` and reports Acc@k (mean accuracy over the draws, the
    ``accuracy`` field) and pass@k. ``engine`` is ``"hf"``, ``"vllm"`` or a ready RolloutEngine
    (the model is only loaded when some sample still needs generating). ``system`` is a system
    prompt or a key of ``evals.prompts.SYSTEM_PROMPTS``. With ``judge_url`` each response is also
    scored by VLMEvalKit's judge protocol for its benchmark (``evals.judge_protocols``) over that
    OpenAI-compatible endpoint; records and summaries hold rule and judge scores side by side
    (``rule_metrics`` / ``judge_metrics``). Rule-based scoring alone is the default.

    ``tool_rounds > 0`` evaluates with tools (Pixel-Reasoner's protocol): each response is a
    multi-turn rollout (``harness.rollout.multiturn.MultiTurnEngine`` over the engine) in which up
    to ``tool_rounds`` calls of ``tools`` are executed and their observations (e.g. the cropped
    image) shown to the model, then one final round; the final answer is read from the end of the
    model's own text (every round's generated tokens, observations left out: a number in a crop box
    or an error message is never taken for the answer); each record lists its calls
    (``tool_calls``) and keeps the whole trajectories, observations included (``trajectories``). Without ``system`` the
    system prompt is ``harness.tools.tool_system_prompt(tools)``. ``max_new_tokens`` bounds the
    generated tokens of a response over all its rounds. ``vllm``: engine ``vllm``'s settings
    (``harness.train_config.VLLMSettings``: memory share, tensor parallel size, max length).

    Throughput: pending samples are generated ``batch_size`` at a time in batches of similar
    prompt length (``sort_by_length``, see ``batches``; records are keyed by id, so summaries and
    prediction files do not depend on it); a batch's samples are scored concurrently on the
    math-verify worker pool (``_Scorer``); each record is appended as soon as it is scored and the
    file is synced to disk once per batch. A crash loses at most the batch being generated; a
    record cut off mid-write is dropped on resume and its sample generated again.
    """
    if mode == "greedy":
        if k != 1:
            raise ValueError("mode 'greedy' is Acc@1: k must be 1 (use mode 'sample' for k > 1)")
        temperature = 0.0
    elif mode == "sample":
        if temperature <= 0:
            raise ValueError("mode 'sample' needs a temperature > 0")
    else:
        raise ValueError(f"unknown mode {mode!r}; known: greedy, sample")
    if k < 1:
        raise ValueError("k must be >= 1")
    if tool_rounds < 0:
        raise ValueError(f"tool_rounds must be >= 0, got {tool_rounds}")
    names = resolve_names(benchmarks)
    system_text = prompts.resolve_system(system)
    if tool_rounds and system_text is None:
        from harness.tools import tool_system_prompt
        system_text = tool_system_prompt(tools)
    judge = None
    if judge_url:
        from evals.judge import Judge
        judge = Judge(judge_url, model=judge_model, api_key=judge_api_key, api_key_env=judge_api_key_env,
                      timeout_s=judge_timeout_s, max_retries=judge_retries)
    extractor = judge.name if judge else "rule"
    out = require_directory(out_dir, "--out directory")
    sampling = SamplingParams(n=k, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                              logprobs=False)     # scoring reads the texts only
    model_name = model if isinstance(model, str) else getattr(model, "path", repr(model))
    settings = RunSettings(model=model_name, source=str(source), mode=mode, k=k, temperature=temperature,
                           top_p=top_p, max_new_tokens=max_new_tokens, system=system_text, seed=seed,
                           extractor=extractor, tool_rounds=tool_rounds)
    engine_obj: RolloutEngine | None = engine if not isinstance(engine, str) else None
    if engine_obj is not None:
        engine_obj = _with_tools(engine_obj, tools, tool_rounds)
    summaries: dict[str, dict] = {}
    for name in names:
        bench = get_benchmark(name)
        bdir = out / name
        bdir.mkdir(parents=True, exist_ok=True)
        _check_settings(bdir / "config.json", settings)
        samples = bench.load(source, limit, smoke_n=smoke_n)
        for s in samples:
            s.system = system_text
        hashes = {s.id: prompt_hash(s) for s in samples}
        rec_path = bdir / "records.jsonl"
        done = {r["id"]: r for r in read_records(rec_path) if hashes.get(r["id"]) == r.get("prompt_hash")}
        pending = [s for s in samples if s.id not in done]
        if pending and engine_obj is None:
            engine_obj = _with_tools(make_engine(model_name, str(engine), batch_size=batch_size, device=device,
                                                 dtype=dtype, vllm=vllm), tools, tool_rounds)
        bar = tqdm(total=len(samples), initial=len(samples) - len(pending), desc=name, disable=not progress,
                   unit="sample")
        repair_torn_tail(rec_path)          # a crash mid-write leaves a cut-off last line: drop it
        with JsonlAppender(rec_path) as writer, _Scorer(bench, judge) as scorer:
            for chunk in batches(pending, batch_size, sort_by_length):
                t0 = time.perf_counter()
                traj = engine_obj.generate(chunk, sampling)  # type: ignore[union-attr]
                per_sample = (time.perf_counter() - t0) / len(chunk)
                # multi-turn: the model's own tokens are scored, observations left out
                texts = (traj.extras or {}).get("generated_texts") or traj.texts
                calls = (traj.extras or {}).get("tool_calls")
                jobs = [(sample, list(texts[g * k:(g + 1) * k])) for g, sample in enumerate(chunk)]
                for g, (sample, record) in enumerate(zip(chunk, scorer.score(jobs))):
                    record.update({"prompt_hash": hashes[sample.id], "time_s": round(per_sample, 4)})
                    if calls is not None:
                        record["tool_calls"] = [list(c) for c in calls[g * k:(g + 1) * k]]
                        record["trajectories"] = list(traj.texts[g * k:(g + 1) * k])
                    writer.append(record)   # as soon as it is scored: a crash loses no finished sample
                    done[sample.id] = record
                    if on_record:
                        on_record(record)
                    bar.update(1)
                writer.sync()               # on disk once per batch, not per sample
        bar.close()
        records = [done[s.id] for s in samples]
        summary = summarize(bench, records, settings)
        atomic_write_text(bdir / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
        from evals.vlmeval_io import file_name, write_predictions
        write_predictions(name, samples, records, bdir / "vlmeval" / file_name(model_name, name))
        summaries[name] = summary
    return summaries


def prompt_size(sample: Sample) -> int:
    """An engine-independent estimate of ``sample``'s prompt length in tokens, for sorting
    (characters / 4, plus one token per 28 x 28 pixels of each image, as Qwen-VL merges patches)."""
    return len(sample.system or "") // 4 + len(sample.prompt) // 4 + sum(
        img.size[0] * img.size[1] // 784 for img in sample.images)


def batches(samples: list[Sample], batch_size: int, sort_by_length: bool = True) -> list[list[Sample]]:
    """``samples`` cut into generation batches of ``batch_size``; with ``sort_by_length`` sorted by
    ``prompt_size`` first (stable: ties keep their order), so a batch's prompts need little padding.
    Records are keyed by sample id, so the order they are generated in changes no result."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(samples, key=prompt_size) if sort_by_length else list(samples)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class _Scorer:
    """Scores a batch's samples (``score_sample``) with several in flight at once, so their
    math-verify calls run in parallel on ``harness.rewards``' worker pool instead of one round
    trip at a time; results come back in input order. With a judge (its call log is per call
    sequence) or a pool of one worker, samples are scored one after another in this thread.

    In a pool thread the in-process rule extraction runs without ``harness.deadline``'s signal
    timer (main thread only); it is linear-time on a bounded window, the timer is only the second
    line of defence (see harness.deadline), and math-verify keeps its hard per-call limit."""

    def __init__(self, bench: Benchmark, judge: Any = None) -> None:
        from harness.rewards import verifier_workers

        self.bench, self.judge = bench, judge
        workers = 1 if judge is not None else verifier_workers()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="score") if workers > 1 else None

    def score(self, jobs: list[tuple[Sample, list[str]]]) -> Iterator[dict]:
        """One record per ``(sample, responses)``, in order, each as soon as it (and the ones
        before it) are scored."""
        def one(job: tuple[Sample, list[str]]) -> dict:
            return score_sample(self.bench, job[0], job[1], judge=self.judge)

        if self.pool is None or len(jobs) < 2:
            return map(one, jobs)
        self._prepare(jobs)
        return self.pool.map(one, jobs)

    def _prepare(self, jobs: list[tuple[Sample, list[str]]]) -> None:
        """Run the families' one-time set-up (module loading) here, not racing in the pool."""
        for name in {s.meta.get("family", self.bench.family) for s, _ in jobs}:
            family = scoring.FAMILIES[name]
            if family.prepare is not None:
                family.prepare()

    def __enter__(self) -> "_Scorer":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def score_sample(bench: Benchmark, sample: Sample, responses: list[str], judge: Any = None) -> dict:
    """The record of one sample: each response scored by the rules and (with ``judge``) by the
    judge protocol (``evals.judge_protocols``), side by side; ``scores`` / ``correct`` / ``score``
    are the judge's where it answered (every call of that response succeeded), else the rules'."""
    rule = [bench.score(sample, resp) for resp in responses]
    extracted = [r["extracted"] for r in rule]
    scores, correct = [r["score"] for r in rule], [r["correct"] for r in rule]
    record: dict[str, Any] = {"id": sample.id, "benchmark": bench.name, "answer": sample.answer,
                              "response": responses[0] if len(responses) == 1 else None,
                              "responses": responses if len(responses) > 1 else None}
    extractor = "rule"
    if judge is not None:
        from evals.judge_protocols import judge_score

        family = scoring.FAMILIES[sample.meta.get("family", bench.family)]
        judged = []
        for i, resp in enumerate(responses):
            ext, value, protocol = judge_score(bench, sample, resp, judge)
            calls = judge.take_log()
            failed = any("error" in c for c in calls)
            judged.append({"protocol": protocol, "extracted": ext, "score": value, "failed": failed, "calls": calls})
            if not failed:
                extracted[i], scores[i], correct[i] = ext, value, bool(value >= family.pass_mark)
                extractor = judge.name
        record.update({"judge_scores": [j["score"] for j in judged], "judge_correct":
                       [bool(j["score"] >= family.pass_mark) for j in judged], "judge": judged})
    record.update({
        "extracted": extracted if len(extracted) > 1 else extracted[0],
        "scores": scores, "correct": correct, "score": sum(scores) / len(scores),
        "rule_scores": [r["score"] for r in rule], "rule_correct": [r["correct"] for r in rule],
        "extractor": extractor, "meta": {k: v for k, v in sample.meta.items() if _jsonable(v)},
    })
    return record


def side_by_side(bench: Benchmark, records: list[dict], kind: str) -> dict[str, float] | None:
    """The benchmark's metrics (percent) from the ``kind`` ("rule" / "judge") scores of the records;
    None when some record has none."""
    if not records or any(f"{kind}_scores" not in r for r in records):
        return None
    alt = [{**r, "scores": r[f"{kind}_scores"], "correct": r[f"{kind}_correct"],
            "score": sum(r[f"{kind}_scores"]) / len(r[f"{kind}_scores"])} for r in records]
    return bench.aggregate(alt)


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def score_file(benchmark: str, predictions: str | Path, *, out_dir: str | Path, source: str | Path = "hub",
               limit: int | None = None, smoke_n: int = 2, **kw: Any) -> dict:
    """Score a prediction file in VLMEvalKit's layout (``evals.vlmeval_io.read_predictions``: one of
    ours, or VLMEvalKit's own ``{model}_{dataset}`` file) as ``run`` scores generations; the
    summary of ``benchmark``."""
    from evals.vlmeval_io import PredictionEngine, read_predictions

    samples = get_benchmark(benchmark).load(source, limit, smoke_n=smoke_n)
    engine = PredictionEngine(read_predictions(predictions, samples))
    name = get_benchmark(benchmark).name
    return run(f"file:{Path(predictions).name}", name, out_dir=out_dir, engine=engine, source=source, limit=limit,
               smoke_n=smoke_n, **kw)[name]
