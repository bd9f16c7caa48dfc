"""PTD-PO's offline hint job (methods/ptdpo/hints.py) and the retrying OpenAI-compatible client
(harness/openai_client.py), against a local HTTP server started by the test."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.errors import ConfigError, RunError
from harness.openai_client import ChatClient, EndpointError
from harness.types import Sample
from methods.ptdpo.hints import HintJobConfig, answer_leaks, generate_hints, spoiler_reasons


class FakeEndpoint:
    """An OpenAI-compatible ``/v1/chat/completions`` that plays a script, one entry per request:
    ``("ok", content[, finish])``, ``("status", code[, retry_after])``, ``("sleep", seconds)``
    (then answers ok), ``("garbage",)``. When the script runs out it repeats ``default``."""

    def __init__(self, script=(), default=("ok", "Reasoning guidance: reread the question.")):
        self.script, self.default, self.requests = list(script), default, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                step = outer.script.pop(0) if outer.script else outer.default
                if step[0] == "status":
                    self.send_response(step[1])
                    if len(step) > 2:
                        self.send_header("Retry-After", str(step[2]))
                    self.end_headers()
                    return
                if step[0] == "sleep":
                    time.sleep(step[1])
                    step = ("ok", "late")
                if step[0] == "garbage":
                    payload = b"<html>busy</html>"
                else:
                    finish = step[2] if len(step) > 2 else "stop"
                    payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": step[1]},
                                                       "finish_reason": finish}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except BrokenPipeError:  # the client timed out
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def client(url: str, **kw) -> ChatClient:
    waits: list[float] = []
    c = ChatClient(url, "teacher", timeout_s=kw.pop("timeout_s", 5.0), sleep=waits.append, seed=0, **kw)
    c.waits = waits  # type: ignore[attr-defined]
    return c


# ---------------------------------------------------------------- the client

def test_client_retries_rate_limits_server_errors_timeouts_and_garbage(monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    script = [("status", 429, 0), ("status", 503), ("sleep", 1.0), ("garbage",), ("ok", "fine")]
    with FakeEndpoint(script) as ep:
        c = client(ep.url, timeout_s=0.3, api_key_env="FAKE_KEY")
        assert c.chat([{"role": "user", "content": "hi"}], max_tokens=5) == ("fine", "stop")
    assert c.stats == {"requests": 5, "retries": 4}
    assert c.waits[0] == 0.0 and all(w >= 0 for w in c.waits)  # Retry-After honoured, then jittered backoff
    assert ep.requests[0]["path"] == "/v1/chat/completions" and ep.requests[0]["auth"] == "Bearer sk-test"
    assert ep.requests[0]["body"] == {"model": "teacher", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def test_client_gives_up_after_max_retries_and_never_retries_a_bad_request():
    with FakeEndpoint(default=("status", 500)) as ep:
        c = client(ep.url, max_retries=2)
        with pytest.raises(EndpointError, match="HTTP 500"):
            c.chat([{"role": "user", "content": "x"}])
        assert len(ep.requests) == 3
    with FakeEndpoint(default=("status", 400)) as ep:
        with pytest.raises(EndpointError, match="HTTP 400") as e:
            client(ep.url).chat([{"role": "user", "content": "x"}])
        assert len(ep.requests) == 1 and not e.value.retryable
    with pytest.raises(ConfigError, match="http"):
        ChatClient("localhost:8000", "m")


# ---------------------------------------------------------------- the zero-spoiler filter

Q = "A rectangle has sides 6 and 8. What is the length of its diagonal?"


@pytest.mark.parametrize("hint,answer,why", [
    ("Reasoning guidance: use Pythagoras; the diagonal is 10.", "10", "answer"),
    ("Reasoning guidance: the result equals ten point zero, i.e. 10.0 units.", "10", "answer"),
    ("1. Count the cases.\n2. There are 2 of them, so the answer follows.", "2", "answer"),
    ("Reasoning guidance: half of the area is \\frac{1}{2} of the square.", "0.5", "answer"),
    ("Reasoning guidance: choose option (C), it is the only obtuse one.", "C", "answer"),
    ("Spatial guidance: the red triangle. Reasoning guidance: compare colours.", "red", "answer"),
    ("Reasoning guidance: square the sides first: you get 36 and 64, then add and take a root.", "10", "intermediate"),
    ("Reasoning guidance: " + "think about it carefully " * 40, "10", "full_cot"),
    ("Reasoning guidance: a=6, b=8, c^2=a^2+b^2=36+64, c=...", "10", "full_cot"),
    ("Reasoning guidance: square both sides; the final answer is obvious.", "10", "full_cot"),
])
def test_spoiler_filter_rejects_leaking_hints(hint, answer, why):
    assert why in spoiler_reasons(hint, answer, Q)


@pytest.mark.parametrize("hint,answer", [
    ("Spatial guidance: none. Reasoning guidance: the diagonal splits the rectangle into two right "
     "triangles; apply Pythagoras to the two given sides and take the square root.", "10"),
    ("Reasoning guidance: count the pairs of vertices, then remove the pairs that are sides.", "\\frac{n(n-3)}{2}"),
    ("Spatial guidance: look at the shape in the centre and ignore the background. Reasoning guidance: "
     "name its colour.", "teal"),
    ("Reasoning guidance: read each option and pick the one whose angle is larger than a right angle.", "C"),
    ("1. Write x^2+2 as (x^2+1)+1.\n2. Then bound each part for n>1.", "2"),  # in formulas, list markers
])
def test_spoiler_filter_accepts_clean_hints(hint, answer):
    assert spoiler_reasons(hint, answer, Q) == []


def test_visual_questions_need_spatial_guidance_in_structured_hints():
    clean = "Spatial guidance: the left bar. Reasoning guidance: compare heights."
    assert spoiler_reasons(clean, "7", "Which bar?", has_image=True) == []
    assert spoiler_reasons("Spatial guidance: none. Reasoning guidance: compare.", "7", "q",
                           has_image=True) == ["no_visual_evidence"]
    assert spoiler_reasons("Reasoning guidance: compare.", "7", "q", has_image=True, structured=False) == []
    assert answer_leaks("n(n-3)/2 diagonals", "\\frac{n(n-3)}{2}") and not answer_leaks("a triangle", "A")


# ---------------------------------------------------------------- the job

SAMPLES = [Sample(id=f"s{i}", prompt=f"Question {i}: rectangle sides 6 and 8, diagonal?", answer="10")
           for i in range(3)]
CLEAN = "Reasoning guidance: split into right triangles and apply Pythagoras."


def _cfg(url: str, **kw) -> HintJobConfig:
    return HintJobConfig(url, "teacher", **kw)


def test_job_regenerates_rejected_hints_and_resumes_without_losing_any(tmp_path):
    out = tmp_path / "hints"
    # s0: leaks, then clean; s1: clean; s2: the endpoint fails past the client's retries
    script = [("ok", "Reasoning guidance: the diagonal is 10."), ("ok", CLEAN), ("ok", CLEAN)]
    with FakeEndpoint(script, default=("status", 503)) as ep:
        c = client(ep.url, max_retries=1)
        with pytest.raises(EndpointError):
            generate_hints(_cfg(ep.url), SAMPLES, out, clients=[c])
        second = ep.requests[1]["body"]["messages"][1]["content"]
        assert "rejected (answer)" in second and "Verified final answer: 10" in second
        assert ep.requests[0]["body"]["max_tokens"] == 16384
    rows = [json.loads(line) for line in (out / "hints.jsonl").read_text().splitlines()]
    assert [(r["id"], r["status"], r["attempts"]) for r in rows] == [("s0", "accepted", 2), ("s1", "accepted", 1)]
    with FakeEndpoint(default=("ok", CLEAN)) as ep:
        counts = generate_hints(_cfg(ep.url), SAMPLES, out, clients=[client(ep.url)])
        assert len(ep.requests) == 1  # only the unfinished question is asked again
    assert counts == {"done_before": 2, "accepted": 1, "rejected": 0}
    again = [json.loads(line) for line in (out / "hints.jsonl").read_text().splitlines()]
    assert again[:2] == rows and [r["id"] for r in again] == ["s0", "s1", "s2"]
    # a finished job asks nothing; other settings are refused
    with FakeEndpoint() as ep:
        assert generate_hints(_cfg(ep.url), SAMPLES, out, clients=[client(ep.url)])["done_before"] == 3
        assert ep.requests == []
        with pytest.raises(RunError, match="structured"):
            generate_hints(_cfg(ep.url, structured=False), SAMPLES, out, clients=[client(ep.url)])


def test_job_records_hints_that_stay_rejected_and_uses_the_fallback_on_truncation(tmp_path):
    leak = ("ok", "Reasoning guidance: it is 10.")
    with FakeEndpoint([leak] * 3, default=("ok", "cut off", "length")) as ep, FakeEndpoint() as fb:
        counts = generate_hints(_cfg(ep.url, max_attempts=3), SAMPLES[:2], tmp_path,
                                clients=[client(ep.url), client(fb.url)])
    rows = [json.loads(line) for line in (tmp_path / "hints.jsonl").read_text().splitlines()]
    assert counts["rejected"] == 1 and rows[0]["status"] == "rejected" and rows[0]["reasons"] == ["answer"]
    assert rows[1]["status"] == "accepted" and len(fb.requests) == 1  # s1: truncated by the first, done by the fallback


def test_trainer_attaches_accepted_hints_by_id(tmp_path):
    from methods.ptdpo.config import PROFILES, PTDPOConfig
    from methods.ptdpo.trainer import load_ptdpo_prompts
    from methods.registry import load_method_config

    from harness.data import load_training_set

    ids = [s.id for s in load_training_set("champ", "train", limit=3)]
    with open(tmp_path / "hints.jsonl", "w") as f:
        f.write(json.dumps({"id": ids[0], "hint": "H0", "status": "accepted"}) + "\n")
        f.write(json.dumps({"id": ids[1], "hint": "H1", "status": "rejected"}) + "\n")
    cfg = load_method_config(PTDPOConfig, PROFILES, "smoke", overrides={"hints": str(tmp_path), "data_limit": 3})
    rows = load_ptdpo_prompts(cfg)
    assert [r.hint for r in rows] == ["H0", None, None]
    assert all("<think>" in r.prompt for r in rows)  # the think/boxed format instruction (App. C.2)


def test_command_line_writes_hints_for_a_training_set_and_reports_endpoint_failures(tmp_path, capsys):
    from methods.ptdpo.hints import main

    with FakeEndpoint(default=("ok", CLEAN)) as ep:
        assert main(["--base-url", ep.url, "--model", "teacher", "--data", "champ", "--limit", "2",
                     "--out", str(tmp_path / "h")]) == 0
        assert len(ep.requests) == 2 and "Verified final answer" in ep.requests[0]["body"]["messages"][1]["content"]
    assert json.loads(capsys.readouterr().out.strip()) == {"done_before": 0, "accepted": 2, "rejected": 0}
    with FakeEndpoint(default=("status", 401)) as ep:
        assert main(["--base-url", ep.url, "--model", "teacher", "--data", "champ", "--limit", "3",
                     "--out", str(tmp_path / "h")]) == 2  # one line, not a traceback
    assert "HTTP 401" in capsys.readouterr().err
