"""The judge path end to end against a local OpenAI-compatible server started by the test: each
benchmark's VLMEvalKit protocol (its prompts), per-sample recording (judge model, prompt sha256,
raw output), retries on 429 / timeouts without losing records, rule and judge scores side by side.

The server is a tiny "judge model": it reads the answer out of the response it is shown the way
a judge would (here: the text after "my final value is"), so a right response scores 1 by judge
while the rules, which cannot read such prose, score it 0."""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

import evals
from evals.judge import FAIL_MSG, Judge, base_url
from evals.runner import read_records
from harness.types import Sample
from tests.test_evals_support import FakeEngine

_VALUE = re.compile(r"my final value is (.+?) indeed")


def mini_judge(prompt: str) -> str:
    values = _VALUE.findall(prompt)
    x = values[-1] if values else ""
    if "Judement" in prompt:                                     # MathVerse, scoring stage
        std = re.search(r"\[Standard Answer\]: (.*)", prompt).group(1).strip()
        got = re.search(r"\[Model_answer\] : (.*)", prompt).group(1).strip()
        return "1" if std == got else "0"
    if "two options of a question" in prompt:                    # yes / no matching
        return "Yes" if x.lower() == "yes" else "No"
    if "What letter did the following answer choose" in prompt:  # LogicVista
        return x.replace(", ", "")
    if "Extracted answer: NONE" in prompt:                      # the generic prompt
        return f"Extracted answer: {x}" if x else "Extracted answer: NONE"
    return x or "Z"


class _Handler(BaseHTTPRequestHandler):
    bodies: list[dict] = []
    script: list = []           # per request, first: an int status, ("sleep", s) or None (answer)

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        step = type(self).script.pop(0) if type(self).script else None
        if isinstance(step, int):
            self.send_response(step)
            self.send_header("Retry-After", "0")
            self.end_headers()
            return
        if isinstance(step, tuple):
            time.sleep(step[1])
        data = json.dumps({"choices": [{"message": {"role": "assistant",
                                                    "content": mini_judge(body["messages"][0]["content"])},
                                        "finish_reason": "stop"}]}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *a):
        pass


@pytest.fixture
def server():
    srv = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    _Handler.bodies, _Handler.script = [], []
    yield f"http://127.0.0.1:{srv.server_port}/v1"
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def prose(sample: Sample, j: int = 0) -> str:
    """A right answer in prose that no rule reads (the letter is not among the last tokens, and the
    text names yes *and* no)."""
    return (f"After a long look at the figure, my final value is {sample.answer} indeed, no doubt, and "
            "nothing else comes to mind here at all.")


JUDGED = ("mmstar", "wemath", "hallusionbench", "mathvista", "mathverse", "mathvision", "logicvista", "math500")


def test_judge_protocols_end_to_end(tmp_path, server):
    _Handler.script = [429, 429, ("sleep", 2.5)]    # rate limited twice, then one timeout: retried
    out = evals.run("fake", ",".join(JUDGED + ("dynamath",)), out_dir=tmp_path, engine=FakeEngine(prose),
                    source="smoke", smoke_n=4, judge_url=server, judge_model="local-judge", judge_api_key="k",
                    judge_timeout_s=1.0, progress=False)
    for name in JUDGED:
        s = out[name]
        assert s["judge_metrics"]["accuracy"] == 100.0, name
        assert s["accuracy"] == 100.0 and s["extractor"] == "llm:local-judge", name
        assert s["rule_metrics"] is not None and s["rule_metrics"]["accuracy"] <= 100.0
    for name in ("mmstar", "mathvista", "mathverse"):
        assert out[name]["rule_metrics"]["accuracy"] == 0.0, name      # the rules cannot read the prose
    assert out["wemath"]["judge_metrics"]["score_strict"] == 100.0
    sent = {hashlib.sha256(b["messages"][0]["content"].encode()).hexdigest()[:16]: b for b in _Handler.bodies}
    protocols = set()
    for name in JUDGED + ("dynamath",):
        for rec in read_records(tmp_path / name / "records.jsonl"):
            assert len(rec["rule_scores"]) == len(rec["judge_scores"]) == 1
            (j,) = rec["judge"]
            protocols.add(j["protocol"])
            for call in j["calls"]:
                assert call["model"] == "local-judge" and "error" not in call
                assert call["prompt_sha"] in sent and call["raw"] == mini_judge(
                    sent[call["prompt_sha"]]["messages"][0]["content"])
    assert protocols >= {"vlmeval:MCQ", "vlmeval:WeMath", "vlmeval:YOrN", "vlmeval:MathVista", "vlmeval:MathVerse",
                         "vlmeval:MathVision", "vlmeval:LogicVista", "vlmeval:DynaMath", "generic"}
    body = _Handler.bodies[0]
    assert body["path"] == "/v1/chat/completions" and body["model"] == "local-judge" and body["auth"] == "Bearer k"


def test_vlmeval_prompts_reach_the_judge(tmp_path, server):
    evals.run("fake", "mmstar,mathvista,hallusionbench", out_dir=tmp_path, engine=FakeEngine(prose), source="smoke",
              smoke_n=2, judge_url=server, judge_model="m", progress=False)
    prompts = [b["messages"][0]["content"] for b in _Handler.bodies]
    assert any("match an answer with several options" in p for p in prompts)           # build_prompt (MCQ)
    assert any("Hint: Please answer the question requiring an integer answer" in p for p in prompts)  # MathVista ICE
    assert any("The options are only Yes / No" in p for p in prompts)                   # YOrN_match_prompt


def test_a_failing_judge_loses_no_record(tmp_path, server):
    _Handler.script = [500] * 400
    out = evals.run("fake", "mmstar", out_dir=tmp_path, engine=FakeEngine(prose), source="smoke", smoke_n=3,
                    judge_url=server, judge_model="m", judge_retries=0, progress=False)["mmstar"]
    recs = read_records(tmp_path / "mmstar" / "records.jsonl")
    assert len(recs) == out["n"] == 3
    for rec in recs:
        assert rec["extractor"] == "rule" and rec["judge"][0]["failed"]
        assert all("HTTP 500" in c["error"] for c in rec["judge"][0]["calls"])
        assert rec["scores"] == rec["rule_scores"]
    assert out["extractor"] == "rule"


def test_judge_client_retries_and_reports():
    j = Judge("http://127.0.0.1:9", max_retries=1, timeout_s=1, sleep=lambda s: None)
    assert j.generate("p") == FAIL_MSG and j.failures == 1
    (call,) = j.take_log()
    assert call["prompt_sha"] == hashlib.sha256(b"p").hexdigest()[:16] and "error" in call
    assert j.take_log() == []
    assert base_url("http://h:8000") == base_url("http://h:8000/v1/chat/completions") == "http://h:8000/v1"


def test_cli_prints_rule_and_judge_side_by_side(tmp_path, server, monkeypatch, capsys):
    import evals.runner as runner
    from evals.cli import main as cli_main

    monkeypatch.setattr(runner, "make_engine", lambda *a, **k: FakeEngine(prose))
    assert cli_main(["run", "--model", "fake", "--benchmarks", "mmstar", "--source", "smoke", "--smoke-n", "2",
                     "--judge", server, "--judge-model", "m", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("benchmark"))
    assert header.split()[-2:] == ["rule", "judge"]
    row = next(line for line in out.splitlines() if line.startswith("mmstar"))
    assert [float(x) for x in row.split()[-2:]] == [0.0, 100.0]
