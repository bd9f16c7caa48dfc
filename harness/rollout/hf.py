"""Rollouts with transformers' ``generate`` (CPU tests, smoke runs, GPU without vLLM).

Prompts are rendered by ``harness.scoring.render_prompt`` and batched with the scorer's own
``collate`` (left padding, positions from the attention mask), ``batch_size`` prompts x ``n``
samples per ``generate`` call.

``old_logp`` (unless ``sampling.logprobs`` is False: zeros) is the log-probability of each
sampled token under the model's *raw* distribution
(temperature 1, no top-p), recorded during generation by a logits processor placed before the
temperature / top-p warpers: it sees the unmodified logits of step ``t`` and, at step ``t + 1``,
reads off the token that was chosen. Only one step's logits are held at a time (unlike
``output_logits=True``, which keeps all of them). These values agree with
``harness.scoring.token_logprobs`` on the same tokens (tested to 1e-4 in fp32).

``traj.extras["rendered"]`` maps ``scoring.render_key(bundle, view)`` to the rendered prompt of
each group (``input_ids``; ``pixel_values``, ``image_grid_thw``, ``mm_token_type_ids`` with
images), so scorers that render the same way reuse it instead of re-processing the images.

Under a sharded policy (``fsdp`` / ``zero3``) every decode step is a collective: ``generate`` runs
with ``synced_gpus`` (``synced_gpus``), and every rank must make the same number of ``generate``
calls (``generate`` does: the trainer gives each rank the same number of prompts; multi-turn
``continue_rows`` and dynamic sampling do not, and are refused there).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from tqdm.auto import tqdm
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, \
    StoppingCriteriaList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from harness.models import PolicyBundle, is_sharded, unwrap_model
from harness.scoring import View, _to_device, collate, render_key, render_prompt, token_id
from harness.types import Sample, SamplingParams, Trajectories


PLACEHOLDER_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


class _RawLogprobRecorder(LogitsProcessor):
    """Records log p(chosen token) under the raw logits; must run before any warper."""

    def __init__(self) -> None:
        self.prev_logp: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def _take(self, chosen: torch.Tensor) -> None:
        self.steps.append(self.prev_logp.gather(-1, chosen[:, None]).squeeze(-1))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prev_logp is not None:
            self._take(input_ids[:, -1])
        self.prev_logp = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        """(rows, steps) log-probs, given the tokens chosen at the last step."""
        if self.prev_logp is not None:
            self._take(last_tokens)
            self.prev_logp = None
        return torch.stack(self.steps, dim=1) if self.steps else torch.zeros((last_tokens.shape[0], 0))


class _BanTokens(LogitsProcessor):
    """Sets the logits of ``ids`` to -inf in place: O(rows x banned) a step, where transformers'
    ``SuppressTokensLogitsProcessor`` builds an O(V) mask and copies all logits every step.
    Must run after ``_RawLogprobRecorder`` (which reads the raw logits)."""

    def __init__(self, ids: list[int], device: torch.device | str) -> None:
        self.ids = torch.tensor(ids, dtype=torch.long, device=device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores.index_fill_(-1, self.ids, float("-inf"))


@contextlib.contextmanager
def _contiguous_head_input(model: torch.nn.Module) -> Iterator[None]:
    """Make the lm_head's input contiguous while generating. The prefill slices the last position
    (``hidden[:, -1:]``, a strided view) before the head, and torch's CPU matmul on a strided
    batched input computes row by row, reading the whole V x H weight for each row (at V = 151,936
    and 8 rows ~3-8x slower than one product): batching gained nothing in the prefill."""
    head = model.get_output_embeddings()
    if head is None:
        yield
        return
    handle = head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


class StopOnText(StoppingCriteria):
    """Stops a row once the decoded text of its last new tokens contains ``stop`` (tokens after
    column ``start`` only). Works whether ``stop`` is one token or many: the last
    ``len(stop) + 2`` tokens are decoded each step (every token decodes to at least one character,
    except partial multi-byte characters, which never complete an ASCII ``stop``)."""

    def __init__(self, tokenizer, stop: str, start: int) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.start = start
        self.window = len(stop) + 2

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        tail = input_ids[:, self.start:][:, -self.window:].tolist()
        hits = [self.stop in self.tokenizer.decode(row, skip_special_tokens=False) for row in tail]
        return torch.tensor(hits, dtype=torch.bool, device=input_ids.device)


def synced_gpus(model: torch.nn.Module) -> bool:
    """Whether ``generate`` must keep every rank stepping until all ranks' rows are done: when the
    model is sharded over more than one rank (FSDP2, ZeRO-3), each decode step's forward is a
    collective. transformers' own default detects neither this harness's FSDP2 (no root module)
    nor a ZeRO-3 engine built without ``HfDeepSpeedConfig``. The tokens are the same either way (a
    finished rank's extra forwards sample nothing)."""
    return is_sharded(model) and dist.is_initialized() and dist.get_world_size() > 1


def placeholder_token_ids(tokenizer) -> list[int]:
    """Ids of the multimodal placeholder tokens the tokenizer defines (never valid in a response)."""
    return [i for i in (token_id(tokenizer, t) for t in PLACEHOLDER_TOKENS) if i is not None]


def response_mask_until_eos(response: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """1 on generated tokens up to and including the first EOS of each row, 0 after it."""
    is_eos = torch.isin(response, torch.tensor(eos_ids, device=response.device))
    after = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # strictly after the first EOS
    return (~after).long()


class HFRolloutEngine:
    """``RolloutEngine`` over ``model.generate``; ``batch_size`` is prompts per call (x ``n`` rows)."""

    def __init__(self, bundle: PolicyBundle, batch_size: int = 8, *, view: View = "full",
                 progress: bool = True) -> None:
        self.bundle = bundle
        self.batch_size = batch_size
        self.view = view
        self.progress = progress

    def sync_weights(self, model: object) -> None:
        """Sample from ``model``'s weights: shares the object when it is the bundle's model, else copies."""
        model = unwrap_model(model)
        if model is not self.bundle.model:
            self.bundle.model.load_state_dict(model.state_dict())  # type: ignore[attr-defined]

    def _generation_config(self, sampling: SamplingParams) -> tuple[GenerationConfig, LogitsProcessorList,
                                                                     _RawLogprobRecorder]:
        b = self.bundle
        # temperature / top_p are applied by our own warpers after the recorder, so HF adds none.
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens, do_sample=sampling.temperature > 0,
            temperature=1.0, top_p=1.0, top_k=0 if sampling.temperature > 0 else None,
            repetition_penalty=1.0, num_beams=1,
            eos_token_id=b.eos_token_ids, pad_token_id=b.pad_token_id,
            bos_token_id=b.tokenizer.bos_token_id, use_cache=True,
        )
        recorder = _RawLogprobRecorder()
        processors = LogitsProcessorList([recorder] if sampling.logprobs else [])
        banned = placeholder_token_ids(b.tokenizer)
        if banned:
            processors.append(_BanTokens(banned, b.device))
        if sampling.temperature > 0:
            if sampling.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_p < 1.0:
                processors.append(TopPLogitsWarper(sampling.top_p))
        return config, processors, recorder

    @torch.no_grad()
    def _generate_rows(self, contexts: list[dict], sampling: SamplingParams,
                       stop: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Responses (rows, L) and their raw log-probs (rows, L) for left-padded ``contexts``;
        with ``stop``, a row also ends once its new text contains ``stop`` (``StopOnText``)."""
        model = self.bundle.model
        batch, ctx_len = collate(self.bundle, contexts)
        batch = _to_device(batch, self.bundle)
        batch.pop("position_ids", None)  # generate derives positions from the attention mask
        config, processors, recorder = self._generation_config(sampling)
        criteria = StoppingCriteriaList([StopOnText(self.bundle.tokenizer, stop, ctx_len)] if stop else [])
        saved = model.generation_config
        model.generation_config = GenerationConfig()  # the checkpoint's defaults must not leak in
        try:
            with _contiguous_head_input(model):
                out = model.generate(**batch, generation_config=config, logits_processor=processors,
                                     stopping_criteria=criteria, synced_gpus=synced_gpus(model))
        finally:
            model.generation_config = saved
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        response = sequences[:, ctx_len:].cpu()
        if not sampling.logprobs:
            return response, torch.zeros(response.shape, dtype=torch.float32)
        logp = recorder.finish(sequences[:, -1]).cpu()
        return response, logp

    def generate(self, samples: list[Sample], sampling: SamplingParams) -> Trajectories:
        b, n = self.bundle, sampling.n
        contexts = [render_prompt(b, s, self.view) for s in samples]
        responses, logps = [], []
        chunks = range(0, len(samples), self.batch_size)
        bar = tqdm(chunks, desc="rollout", unit="batch", disable=not self.progress or len(chunks) <= 1)
        for k, start in enumerate(bar):
            rows = [c for c in contexts[start:start + self.batch_size] for _ in range(n)]
            with torch.random.fork_rng(devices=[]):
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed + k)
                resp, logp = self._generate_rows(rows, sampling)
            responses.append(resp)
            logps.append(logp)
        return self._assemble(samples, contexts, responses, logps, n)

    def continue_rows(self, contexts: list[dict], images: list[list], sampling: SamplingParams,
                      stop: str | None, round_index: int) -> list[tuple[list[int], list[float]]]:
        """One continuation per row of ``contexts`` (rendered extended contexts, see
        ``harness.rollout.multiturn``): ``(token ids, raw log-probs)`` per row, ending at EOS, at
        ``sampling.max_new_tokens``, or once the new text contains ``stop``; tokens after a row's
        end (padding) may follow and are cut by the caller. ``batch_size * sampling.n`` rows per
        ``generate`` call; chunk ``k`` of round ``r`` is seeded ``seed + k + 1000003 * r`` (round 0
        seeds like ``generate``). ``images`` are not needed (the contexts carry pixel values)."""
        per_call = max(1, self.batch_size * sampling.n)
        out: list[tuple[list[int], list[float]]] = []
        for k, start in enumerate(range(0, len(contexts), per_call)):
            with torch.random.fork_rng(devices=[]):
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed + k + 1_000_003 * round_index)
                resp, logp = self._generate_rows(contexts[start:start + per_call], sampling, stop)
            out += [(r.tolist(), lp.tolist()) for r, lp in zip(resp, logp)]
        return out

    def _assemble(self, samples: list[Sample], contexts: list[dict], responses: list[torch.Tensor],
                  logps: list[torch.Tensor], n: int) -> Trajectories:
        b = self.bundle
        pad = b.pad_token_id
        t_len = max((r.shape[1] for r in responses), default=0)
        response = torch.cat([torch.nn.functional.pad(r, (0, t_len - r.shape[1]), value=pad) for r in responses])
        old_logp = torch.cat([torch.nn.functional.pad(x, (0, t_len - x.shape[1])) for x in logps])
        mask = response_mask_until_eos(response, b.eos_token_ids)
        response = torch.where(mask.bool(), response, torch.full_like(response, pad))
        old_logp = old_logp * mask
        prompts, _ = collate(b, [c for c in contexts for _ in range(n)])
        texts = [b.tokenizer.decode(r[m.bool()].tolist(), skip_special_tokens=True) for r, m in zip(response, mask)]
        key = render_key(b, self.view)
        return Trajectories(
            samples=list(samples), prompt_ids=prompts["input_ids"], prompt_mask=prompts["attention_mask"],
            response_ids=response, response_mask=mask, old_logp=old_logp.float(),
            group_ids=torch.arange(len(samples)).repeat_interleave(n), texts=texts,
            extras={"rendered": {key: contexts} if key is not None else {}},
        )
