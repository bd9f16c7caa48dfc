"""The runner with a fake rollout engine: records, summaries, resume after a crash, sampling mode,
settings checks; the LLM extractor against a local HTTP server; the CLI."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

import evals
from evals.cli import main as cli_main
from evals.judge import Judge, parse_reply
from evals.runner import EvalConfigError, read_records
from tests.test_evals_support import FakeEngine, oracle_response

SUMMARY_KEYS = {"benchmark", "model", "source", "n", "accuracy", "ci95", "metrics", "metric_ci95", "extractor",
                "mode", "k"}


def half_right(sample, j):
    """Right on even-numbered samples (by id hash order), wrong otherwise."""
    return oracle_response(sample) if sample.id.endswith(("0", "2", "4", "6", "8")) else "no answer here."


def test_records_and_summary(tmp_path):
    s = evals.run("fake-model", "mmstar,wemath", out_dir=tmp_path, engine=FakeEngine(), source="smoke",
                  smoke_n=4, progress=False)
    assert set(s) == {"mmstar", "wemath"}
    for name, summary in s.items():
        assert SUMMARY_KEYS <= set(summary)
        assert summary["accuracy"] == 100.0 and summary["ci95"] == [100.0, 100.0]
        assert summary["extractor"] == "rule" and summary["mode"] == "greedy" and summary["k"] == 1
        on_disk = json.loads((tmp_path / name / "summary.json").read_text())
        assert on_disk["n"] == summary["n"] == len(read_records(tmp_path / name / "records.jsonl"))
    rec = read_records(tmp_path / "mmstar" / "records.jsonl")[0]
    assert {"id", "prompt_hash", "response", "extracted", "correct", "score", "time_s", "meta"} <= set(rec)
    assert s["wemath"]["metrics"]["score_strict"] == 100.0


def test_confidence_interval_brackets_accuracy(tmp_path):
    s = evals.run("fake", "mmstar", out_dir=tmp_path, engine=FakeEngine(half_right), source="smoke",
                  smoke_n=20, progress=False)["mmstar"]
    lo, hi = s["ci95"]
    assert 0.0 < lo <= s["accuracy"] <= hi < 100.0
    recs = read_records(tmp_path / "mmstar" / "records.jsonl")
    assert s["accuracy"] == pytest.approx(100 * sum(r["score"] for r in recs) / len(recs))


def test_resume_after_a_crash_loses_nothing(tmp_path):
    crashing = FakeEngine(fail_after=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evals.run("fake", "mmstar", out_dir=tmp_path, engine=crashing, source="smoke", smoke_n=7,
                  batch_size=1, progress=False)
    path = tmp_path / "mmstar" / "records.jsonl"
    assert len(read_records(path)) == 3
    with open(path, "a") as f:
        f.write('{"id": "mmstar/broken", "prompt')          # a line cut off mid-write
    fresh = FakeEngine()
    s = evals.run("fake", "mmstar", out_dir=tmp_path, engine=fresh, source="smoke", smoke_n=7,
                  batch_size=1, progress=False)["mmstar"]
    assert fresh.generated == 4 and s["n"] == 7 and s["accuracy"] == 100.0
    ids = [r["id"] for r in read_records(path)]
    assert len(ids) == len(set(ids)) == 7
    # a finished evaluation is only re-summarised: the model ("fake": no such path) is never loaded
    again = evals.run("fake", "mmstar", out_dir=tmp_path, engine="hf", source="smoke", smoke_n=7,
                      batch_size=1, progress=False)["mmstar"]
    assert again["accuracy"] == 100.0


def test_changed_prompt_is_regenerated(tmp_path):
    evals.run("fake", "mmstar", out_dir=tmp_path, engine=FakeEngine(), source="smoke", smoke_n=2, progress=False)
    path = tmp_path / "mmstar" / "records.jsonl"
    recs = read_records(path)
    recs[0]["prompt_hash"] = "0" * 16
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    eng = FakeEngine()
    evals.run("fake", "mmstar", out_dir=tmp_path, engine=eng, source="smoke", smoke_n=2, progress=False)
    assert eng.generated == 1


def test_settings_mismatch_is_refused(tmp_path):
    evals.run("fake", "mmstar", out_dir=tmp_path, engine=FakeEngine(), source="smoke", progress=False)
    with pytest.raises(EvalConfigError, match="temperature"):
        evals.run("fake", "mmstar", out_dir=tmp_path, engine=FakeEngine(), source="smoke", mode="sample", k=1,
                  temperature=0.7, progress=False)


def test_sample_mode_acc_at_k_and_pass_at_k(tmp_path):
    # right on draws 0 and 1 of 4: Acc@4 = 50 %, pass@4 = 100 %
    eng = FakeEngine(lambda s, j: oracle_response(s) if j < 2 else "\\boxed{Z}")
    s = evals.run("fake", "mmstar", out_dir=tmp_path, engine=eng, source="smoke", mode="sample", k=4,
                  temperature=1.0, progress=False)["mmstar"]
    assert s["accuracy"] == 50.0 and s["metrics"]["pass@4"] == 100.0 and s["k"] == 4
    rec = read_records(tmp_path / "mmstar" / "records.jsonl")[0]
    assert rec["correct"] == [True, True, False, False] and len(rec["responses"]) == 4


def test_bad_arguments():
    with pytest.raises(ValueError, match="greedy"):
        evals.run("m", "mmstar", out_dir="x", k=4)
    with pytest.raises(ValueError, match="temperature"):
        evals.run("m", "mmstar", out_dir="x", mode="sample", k=4, temperature=0.0)
    with pytest.raises(KeyError, match="unknown benchmark"):
        evals.run("m", "nope", out_dir="x")


def test_system_prompt_is_applied_and_hashed(tmp_path):
    seen = []
    eng = FakeEngine(lambda s, j: seen.append(s.system) or oracle_response(s))
    evals.run("fake", "mmstar", out_dir=tmp_path, engine=eng, source="smoke", system="vgs", progress=False)
    assert seen and all("<reason></reason>" in s for s in seen)


# ---------------------------------------------------------------- LLM extraction
class _Handler(BaseHTTPRequestHandler):
    replies: list[str] = []
    bodies: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        reply = type(self).replies.pop(0) if type(self).replies else "Extracted answer: NONE"
        if reply == "500":
            self.send_response(500)
            self.end_headers()
            return
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture
def judge_server():
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.replies, _Handler.bodies = [], []
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_llm_extractor_against_a_local_server(tmp_path, judge_server):
    # the model's responses carry no rule-extractable answer; the judge reads "B" out of them
    n = 2
    _Handler.replies = ["Extracted answer: " + a for a in ["A", "B"]]
    eng = FakeEngine(lambda s, j: "After some thought I'd go with the second option, I believe.")
    s = evals.run("fake", "mmstar", out_dir=tmp_path, engine=eng, source="smoke", smoke_n=n,
                  judge_url=judge_server, judge_model="local-judge", judge_api_key="k", progress=False)["mmstar"]
    recs = read_records(tmp_path / "mmstar" / "records.jsonl")
    assert [r["extracted"] for r in recs] == ["A", "B"]
    assert s["extractor"] == "llm:local-judge"
    golds = [r["answer"] for r in recs]                     # the smoke rows' gold letters
    assert s["accuracy"] == 100.0 * sum(g == e for g, e in zip(golds, ["A", "B"])) / n
    body = _Handler.bodies[0]
    assert body["path"] == "/v1/chat/completions" and body["model"] == "local-judge" and body["auth"] == "Bearer k"
    assert "second option" in body["messages"][0]["content"]


def test_judge_failure_falls_back_to_rules(judge_server):
    _Handler.replies = ["500", "500", "500"]
    judge = Judge(judge_server, max_retries=2, timeout_s=5, sleep=lambda s: None)
    from evals.benchmarks import REGISTRY
    sample = REGISTRY["mmstar"].load("smoke")[0]
    assert judge.extract(sample.prompt, "\\boxed{A}") is None and judge.failures == 1
    unreachable = Judge("http://127.0.0.1:9", max_retries=0, timeout_s=2)
    assert unreachable.extract(sample.prompt, "x") is None


def test_parse_reply():
    assert parse_reply("Extracted answer: B") == "B"
    assert parse_reply("  42 ") == "42"
    assert parse_reply("Extracted answer: NONE") is None and parse_reply("") is None


# ---------------------------------------------------------------- CLI
def test_cli_list_and_errors(capsys):
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("mathvista", "wemath", "tallyqa", "vlms_are_blind"))
    assert cli_main(["run", "--model", "m", "--benchmarks", "nope", "--out", "unused"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


def test_run_defaults_a_new_user_can_live_with(monkeypatch):
    import evals.runner as runner

    seen = {}

    def fake_run(model, benchmarks, **kw):
        seen[model] = kw
        return {}

    monkeypatch.setattr(runner, "run", fake_run)
    assert cli_main(["run", "--model", "smoke:qwen2_5_vl", "--benchmarks", "mmstar"]) == 0
    assert cli_main(["run", "--model", "org/Some-VL-7B", "--benchmarks", "mmstar"]) == 0
    assert cli_main(["run", "--model", "org/x", "--benchmarks", "mmstar", "--source", "smoke"]) == 0
    smoke, full, src = seen["smoke:qwen2_5_vl"], seen["org/Some-VL-7B"], seen["org/x"]
    assert smoke["max_new_tokens"] == 16 and src["max_new_tokens"] == 16 and full["max_new_tokens"] == 1024
    assert smoke["out_dir"] == "runs/evals/smoke_qwen2_5_vl" and full["out_dir"] == "runs/evals/org_Some-VL-7B"
    assert smoke["device"] in ("cpu", "cuda")
