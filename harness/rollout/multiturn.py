"""Multi-turn rollouts with tool calls (Pixel-Reasoner style) over any row-continuing engine.

``MultiTurnEngine(engine, tools, max_tool_rounds)`` wraps an ``HFRolloutEngine`` or a
``VLLMRolloutEngine`` and is itself a ``RolloutEngine``. Per row of the batch
(``len(samples) * sampling.n`` rows):

1. *round k* (``k < max_tool_rounds``): the engine continues the row's *extended context* — the
   rendered prompt followed by the response so far (generated and observation tokens), with the
   prompt's images followed by the observation images (``pixel_values`` / ``image_grid_thw`` /
   ``mm_token_type_ids`` extended accordingly) — until EOS, the row's token budget, or right after
   ``</tool_call>`` (a stopping criterion on the decoded text of the new tokens, so it works
   whether or not the tokenizer has ``</tool_call>`` as one token);
2. a round that ended after ``</tool_call>``: the call is parsed (``harness.tools.parse_tool_call``)
   and executed (``execute_tool_call``; a malformed call gives an error observation), and the
   observation is appended as tokens (``render_observation``); the row goes on to round ``k + 1``;
3. a round that ended with EOS or at the budget ends the row;
4. round ``max_tool_rounds`` is the final answer round: it is generated without the tool stop, and
   a tool call written there is not executed.

Observation format (``render_observation``), in the chat template's own turn structure::

    <|im_end|>\\n<|im_start|>user\\n<tool_response>\\n
    [<|vision_start|><|image_pad|>*n<|vision_end|> per image]TEXT\\n</tool_response><|im_end|>\\n
    <|im_start|>assistant\\n

each ``<|image_pad|>`` expanded to ``t*h*w / merge**2`` tokens by the *policy's* image processor,
exactly as ``harness.scoring.render_prompt`` expands prompt images.

Trajectories (see ``harness.types.Trajectories``):

* ``response_ids`` hold the whole trajectory after the prompt (every round's generated tokens and
  every observation), right-padded;
* ``response_mask`` (loss mask) is 1 on generated tokens only (the final EOS included);
  ``response_valid`` is 1 on every real token (generated + observation); ``old_logp`` is the raw
  log-probability of each generated token, 0 on observation tokens and padding;
* ``response_images[b]`` are the ``ObservationImage`` s of row ``b`` in order;
* ``texts[b]`` is the decoded full trajectory (special tokens skipped): the rounds' text, the tool
  calls, and the ``<tool_response>`` blocks; rewards read the final answer from its end;
* ``extras["tool_calls"][b]``: one ``{"name", "error", "observation"}`` dict per executed call;
* ``extras["generated_texts"][b]``: the decoded generated tokens alone (every round, observations
  left out): what evaluation scores, so that numbers in an observation (a crop box, an error
  message) are never read as the model's answer.

Token budget: ``sampling.max_new_tokens`` bounds the *generated* tokens of a row over all rounds;
``max_response_tokens`` (default: unbounded) bounds the whole response, observations included:
a row whose next observation would not fit ends there, without it.

Both engines implement ``continue_rows(contexts, images, sampling, stop, round_index)`` (one
continuation per row, ``n=1``): see ``HFRolloutEngine.continue_rows`` and
``VLLMRolloutEngine.continue_rows``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from PIL import Image

from harness.models import PolicyBundle
from harness.scoring import apply_view, collate, processor_key, render_key, render_prompt, token_id
from harness.tools import CALL_CLOSE, Observation, ToolCallError, error_observation, execute_tool_call, \
    parse_tool_call, resolve_tools
from harness.types import ObservationImage, Sample, SamplingParams, Trajectories

OBS_PREFIX = "<|im_end|>\n<|im_start|>user\n<tool_response>\n"
OBS_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
OBS_SUFFIX = "\n</tool_response><|im_end|>\n<|im_start|>assistant\n"


def observation_text(obs: Observation) -> str:
    """The observation turn as text, one ``<|image_pad|>`` per image (not yet expanded)."""
    return OBS_PREFIX + OBS_IMAGE * len(obs.images) + obs.text + OBS_SUFFIX


def render_observation(bundle: PolicyBundle, obs: Observation) -> tuple[list[int], list[ObservationImage]]:
    """Token ids of ``obs`` as an observation turn (see the module docstring), with each
    ``<|image_pad|>`` expanded to the image's token count under ``bundle``'s image processor, and
    the processed images. A text-only ``bundle`` cannot show images: the observation becomes an
    error observation."""
    tok = bundle.tokenizer
    if obs.images and bundle.processor is None:
        obs = error_observation(f"the tool returned {len(obs.images)} image(s) but the policy is a text-only model")
    ids = tok(observation_text(obs), add_special_tokens=False)["input_ids"]
    if not obs.images:
        return list(ids), []
    pad_id = token_id(tok, "<|image_pad|>")
    merge = int(getattr(bundle.processor, "merge_size", 2))
    key = processor_key(bundle)
    images: list[ObservationImage] = []
    for im in obs.images:
        proc = bundle.processor(images=[im], return_tensors="pt")
        grid = proc["image_grid_thw"]
        images.append(ObservationImage(image=im, pixel_values=proc["pixel_values"], image_grid_thw=grid,
                                       n_tokens=int(grid.prod(-1).sum()) // merge**2, processor_key=key))
    counts = iter(im.n_tokens for im in images)
    expanded: list[int] = []
    for i in ids:
        expanded.extend([pad_id] * next(counts) if i == pad_id else [i])
    return expanded, images


def first_stop(tokenizer: Any, ids: list[int], stop: str) -> int | None:
    """The smallest ``m`` such that ``decode(ids[:m])`` contains ``stop`` (None if the whole does
    not): binary search over prefixes, ``O(len(ids) log len(ids))``."""
    def has(m: int) -> bool:
        return stop in tokenizer.decode(ids[:m], skip_special_tokens=False)

    if not ids or not has(len(ids)):
        return None
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if has(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclasses.dataclass
class _Row:
    group: int
    context: dict[str, torch.Tensor]
    context_images: list[Image.Image]
    ids: list[int] = dataclasses.field(default_factory=list)
    loss: list[int] = dataclasses.field(default_factory=list)
    logp: list[float] = dataclasses.field(default_factory=list)
    images: list[ObservationImage] = dataclasses.field(default_factory=list)
    calls: list[dict] = dataclasses.field(default_factory=list)
    generated: int = 0
    done: bool = False

    def extended_context(self, image_pad: int | None) -> dict[str, torch.Tensor]:
        ctx = dict(self.context)
        resp = torch.tensor(self.ids, dtype=torch.long)
        ctx["input_ids"] = torch.cat([self.context["input_ids"], resp])
        if self.images:
            pixels = [self.context["pixel_values"]] if "pixel_values" in self.context else []
            grids = [self.context["image_grid_thw"]] if "image_grid_thw" in self.context else []
            ctx["pixel_values"] = torch.cat(pixels + [im.pixel_values for im in self.images])
            ctx["image_grid_thw"] = torch.cat(grids + [im.image_grid_thw for im in self.images])
        if "mm_token_type_ids" in self.context or self.images:
            base = self.context.get("mm_token_type_ids", torch.zeros_like(self.context["input_ids"]))
            ctx["mm_token_type_ids"] = torch.cat([base, (resp == image_pad).long() if image_pad is not None
                                                  else torch.zeros_like(resp)])
        return ctx


class MultiTurnEngine:
    """``RolloutEngine`` with tool calls over ``engine`` (see the module docstring).

    ``tools``: None (every tool in ``harness.tools.TOOLS``), tool names, tools, or a name -> tool
    mapping. ``max_tool_rounds``: tool calls executed per row at most; then one final round.
    """

    def __init__(self, engine: Any, tools: Any = None, max_tool_rounds: int = 4, *,
                 max_response_tokens: int | None = None, stop: str = CALL_CLOSE) -> None:
        if not hasattr(engine, "continue_rows"):
            raise TypeError(f"{type(engine).__name__} cannot continue rows (no continue_rows method)")
        if max_tool_rounds < 0:
            raise ValueError(f"max_tool_rounds must be >= 0, got {max_tool_rounds}")
        self.engine = engine
        self.tools = resolve_tools(tools)
        self.max_tool_rounds = max_tool_rounds
        self.max_response_tokens = max_response_tokens
        self.stop = stop

    @property
    def bundle(self) -> PolicyBundle:
        return self.engine.bundle

    @property
    def view(self):
        return self.engine.view

    def sync_weights(self, model: object) -> None:
        self.engine.sync_weights(model)

    def sleep(self) -> None:
        getattr(self.engine, "sleep", lambda: None)()

    def wake_up(self) -> None:
        getattr(self.engine, "wake_up", lambda: None)()

    def generate(self, samples: list[Sample], sampling: SamplingParams) -> Trajectories:
        b, n = self.bundle, sampling.n
        contexts = [render_prompt(b, s, self.view) for s in samples]
        rows = [_Row(group=g, context=contexts[g], context_images=list(apply_view(s, self.view).images))
                for g, s in enumerate(samples) for _ in range(n)]
        image_pad = token_id(b.tokenizer, "<|image_pad|>")
        eos = set(b.eos_token_ids)
        for round_index in range(self.max_tool_rounds + 1):
            active = [r for r in rows if not r.done and r.generated < sampling.max_new_tokens]
            if not active:
                break
            tool_round = round_index < self.max_tool_rounds
            budget = max(sampling.max_new_tokens - r.generated for r in active)
            outputs = self.engine.continue_rows(
                [r.extended_context(image_pad) for r in active],
                [r.context_images + [im.image for im in r.images] for r in active],
                dataclasses.replace(sampling, n=1, max_new_tokens=budget),
                self.stop if tool_round else None, round_index)
            for row, (ids, logps) in zip(active, outputs):
                self._advance(row, list(ids), list(logps), eos, tool_round, sampling.max_new_tokens)
        for r in rows:
            r.done = True
        return self._assemble(samples, contexts, rows, n)

    def _advance(self, row: _Row, ids: list[int], logps: list[float], eos: set[int], tool_round: bool,
                 max_new: int) -> None:
        """Append one round's output to ``row``; run its tool call, if any."""
        tok = self.bundle.tokenizer
        ids, logps = ids[:max_new - row.generated], logps[:max_new - row.generated]
        end_eos = next((i for i, t in enumerate(ids) if t in eos), None)
        stop_at = first_stop(tok, ids[:end_eos], self.stop) if tool_round else None
        if stop_at is not None:
            keep = stop_at
        elif end_eos is not None:
            keep, row.done = end_eos + 1, True
        else:
            keep = len(ids)
            row.done = True  # out of budget (the engine stops at the stop string or EOS otherwise)
        row.ids += ids[:keep]
        row.loss += [1] * keep
        row.logp += [float(x) for x in logps[:keep]]
        row.generated += keep
        if stop_at is None:
            return
        text = tok.decode(ids[:keep], skip_special_tokens=False)
        call = parse_tool_call(text)
        if call is None:
            call = ToolCallError(f"{self.stop} without a preceding <tool_call>")
        obs = execute_tool_call(call, row.context_images + [im.image for im in row.images], self.tools)
        obs_ids, obs_images = render_observation(self.bundle, obs)
        if self.max_response_tokens is not None and len(row.ids) + len(obs_ids) > self.max_response_tokens:
            row.done = True
            row.calls.append({"name": getattr(call, "name", None), "error": True,
                              "observation": "(not appended: max_response_tokens reached)"})
            return
        row.ids += obs_ids
        row.loss += [0] * len(obs_ids)
        row.logp += [0.0] * len(obs_ids)
        row.images += obs_images
        row.calls.append({"name": getattr(call, "name", None), "error": obs.error, "observation": obs.text})
        if row.generated >= max_new:
            row.done = True

    def _assemble(self, samples: list[Sample], contexts: list[dict], rows: list[_Row], n: int) -> Trajectories:
        b = self.bundle
        pad = b.pad_token_id
        t_len = max((len(r.ids) for r in rows), default=0)
        shape = (len(rows), t_len)
        response = torch.full(shape, pad, dtype=torch.long)
        mask = torch.zeros(shape, dtype=torch.long)
        valid = torch.zeros(shape, dtype=torch.long)
        old_logp = torch.zeros(shape, dtype=torch.float32)
        for i, r in enumerate(rows):
            k = len(r.ids)
            response[i, :k] = torch.tensor(r.ids, dtype=torch.long)
            mask[i, :k] = torch.tensor(r.loss, dtype=torch.long)
            valid[i, :k] = 1
            old_logp[i, :k] = torch.tensor(r.logp, dtype=torch.float32)
        old_logp = old_logp * mask
        prompts, _ = collate(b, [c for c in contexts for _ in range(n)])
        texts = [b.tokenizer.decode(r.ids, skip_special_tokens=True) for r in rows]
        generated = [b.tokenizer.decode([t for t, m in zip(r.ids, r.loss) if m], skip_special_tokens=True)
                     for r in rows]
        key = render_key(b, self.view)
        return Trajectories(
            samples=list(samples), prompt_ids=prompts["input_ids"], prompt_mask=prompts["attention_mask"],
            response_ids=response, response_mask=mask, old_logp=old_logp,
            group_ids=torch.arange(len(samples)).repeat_interleave(n), texts=texts,
            response_valid=valid, response_images=[list(r.images) for r in rows],
            extras={"rendered": {key: contexts} if key is not None else {},
                    "tool_calls": [list(r.calls) for r in rows], "generated_texts": generated},
        )


__all__ = ["MultiTurnEngine", "OBS_IMAGE", "OBS_PREFIX", "OBS_SUFFIX", "first_stop", "observation_text",
           "render_observation"]
