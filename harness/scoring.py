"""Per-token log-probabilities (and hidden states) of any model on (context, response) pairs.

A *view* decides the context a scorer sees for a sample:
  "full"       the multimodal prompt (images + text), as the policy saw it;
  "text_only"  images and their placeholders removed (what a text-only teacher sees);
  "hint"       ``sample.hint`` prepended to the prompt (privileged context, PTD-PO);
  a callable   ``Sample -> Sample``, any other transformation;
  names joined by "+" apply left to right ("text_only+hint": a text teacher with the hint).
The context is rendered with the *scorer's* tokenizer, chat template and image processor; the
response token ids of the trajectories are appended unchanged, so row ``b``, column ``t`` of every
scorer's output refers to the same token ``traj.response_ids[b, t]``.

Layout of a scoring batch: contexts left-padded to a common length ``P``, responses right-padded
after them — ``[pad.. context | response ..pad]`` — exactly the layout ``generate`` sees, so the
hidden state at column ``P - 1 + t`` predicts response token ``t``.

Multi-turn tool rollouts (``harness.rollout.multiturn``): the response part is the whole
trajectory after the prompt — generated tokens and tool observation tokens — and the model attends
to all of it (``traj.attention_mask``). Each row's observation images (``traj.response_images``)
go into ``pixel_values`` / ``image_grid_thw`` right after that row's context images (Qwen-VL
matches image features to ``<|image_pad|>`` tokens in order over the flattened batch), with
``mm_token_type_ids`` 1 on their tokens. Log-probs (and hidden states) are returned on the loss
mask ``traj.response_mask`` only (0 on observation tokens and padding). Observation images keep
the policy's processing (pixel values and token counts): a scorer whose image processor differs
(``processor_key``), a text-only model, or a view that drops images (``text_only``) cannot score a
trajectory with image observations and raises ``ValueError``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
from typing import Any, Callable, Union

import torch
from torch.utils.checkpoint import checkpoint

from harness.chunking import tokens_per_chunk
from harness.models import PolicyBundle, full_weight
from harness.types import Sample, Trajectories

View = Union[str, Callable[[Sample], Sample]]
VIEWS = ("full", "text_only", "hint")
HINT_TEMPLATE = "Hint: {hint}\n\n{prompt}"


def apply_view(sample: Sample, view: View) -> Sample:
    """The sample as the scorer should see it (a new Sample; the input is not modified)."""
    if callable(view):
        return view(sample)
    if isinstance(view, str) and "+" in view:
        for part in view.split("+"):
            sample = apply_view(sample, part.strip())
        return sample
    if view == "full":
        return sample
    if view == "text_only":
        return dataclasses.replace(sample, images=[])
    if view == "hint":
        if not sample.hint:
            return sample
        return dataclasses.replace(sample, prompt=HINT_TEMPLATE.format(hint=sample.hint, prompt=sample.prompt))
    raise ValueError(f"unknown view {view!r}; known: {', '.join(VIEWS)} or a callable Sample -> Sample")


def chat_messages(sample: Sample) -> list[dict]:
    """Qwen-style messages: optional system turn, then one user turn with the images before the text."""
    messages = []
    if sample.system:
        messages.append({"role": "system", "content": sample.system})
    if sample.images:
        content: Any = [{"type": "image"} for _ in sample.images] + [{"type": "text", "text": sample.prompt}]
    else:
        content = sample.prompt
    messages.append({"role": "user", "content": content})
    return messages


def render_prompt(bundle: PolicyBundle, sample: Sample, view: View = "full") -> dict[str, torch.Tensor]:
    """Tokenise ``sample`` under ``view`` with ``bundle``'s chat template (generation prompt added).

    Returns 1-D ``input_ids``; with images also ``pixel_values``, ``image_grid_thw`` and
    ``mm_token_type_ids`` (1 on image tokens). Each ``<|image_pad|>`` is expanded to
    ``t*h*w / merge**2`` tokens, as the Qwen-VL processors do.
    """
    s = apply_view(sample, view)
    tok = bundle.tokenizer
    if s.images and not bundle.is_vlm:
        raise ValueError(f"sample {s.id!r} has images but {bundle.path!r} is a text-only model; "
                         "score it with view='text_only'")
    text = tok.apply_chat_template(chat_messages(s), tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    out: dict[str, torch.Tensor] = {}
    if s.images:
        pad_id = tok.convert_tokens_to_ids("<|image_pad|>")
        n_pads = sum(1 for i in ids if i == pad_id)
        if n_pads != len(s.images):
            raise ValueError(f"sample {s.id!r}: chat template of {bundle.path!r} produced {n_pads} "
                             f"<|image_pad|> placeholders for {len(s.images)} images")
        proc = bundle.processor(images=s.images, return_tensors="pt")
        grid = proc["image_grid_thw"]
        merge = int(getattr(bundle.processor, "merge_size", 2))
        counts = iter((grid.prod(-1) // merge**2).tolist())
        expanded: list[int] = []
        for i in ids:
            expanded.extend([pad_id] * next(counts) if i == pad_id else [i])
        ids = expanded
        out["pixel_values"] = proc["pixel_values"]
        out["image_grid_thw"] = grid
        out["mm_token_type_ids"] = torch.tensor([1 if i == pad_id else 0 for i in ids], dtype=torch.long)
    out["input_ids"] = torch.tensor(ids, dtype=torch.long)
    return out


def token_id(tokenizer: Any, token: str) -> int | None:
    """The id of ``token`` in ``tokenizer``'s vocabulary, or None when it has no such token."""
    tid = tokenizer.convert_tokens_to_ids(token)
    return tid if isinstance(tid, int) and tid != tokenizer.unk_token_id else None


def render_key(bundle: PolicyBundle, view: View) -> str | None:
    """Identifies what ``render_prompt(bundle, ., view)`` produces (None for a callable view)."""
    if callable(view):
        return None
    tok = bundle.tokenizer
    parts = [str(view), type(tok).__name__, str(len(tok)), str(tok.chat_template),
             bundle.processor.to_json_string() if bundle.processor is not None else "-"]
    return hashlib.sha1("\x00".join(parts).encode()).hexdigest()[:16]


def rendered_contexts(bundle: PolicyBundle, traj: Trajectories, view: View) -> list[dict[str, torch.Tensor]]:
    """One rendered context per group, reusing what the rollout (or an earlier call) stored in extras."""
    key = render_key(bundle, view)
    cache = traj.extras.setdefault("rendered", {})
    if key is not None and key in cache:
        return cache[key]
    groups = [render_prompt(bundle, s, view) for s in traj.samples]
    if key is not None:
        cache[key] = groups
    return groups


def processor_key(bundle: PolicyBundle) -> str | None:
    """Identifies ``bundle``'s image processor (None for a text-only model): observation images
    processed by one processor are only valid for scorers with the same key."""
    if bundle.processor is None:
        return None
    return hashlib.sha1(bundle.processor.to_json_string().encode()).hexdigest()[:16]


def collate(bundle: PolicyBundle, contexts: list[dict[str, torch.Tensor]],
            responses: torch.Tensor | None = None, response_attention: torch.Tensor | None = None,
            response_images: list[list[Any]] | None = None) -> tuple[dict[str, Any], int]:
    """Model inputs for rows ``[pad.. context | response ..pad]`` (see the module docstring), and
    the padded context length ``P``.

    ``response_attention`` marks the real response tokens (``traj.attention_mask``: generated and
    observation tokens); other response positions become padding. ``response_images[r]`` are row
    ``r``'s observation images (``ObservationImage``), placed after its context images; the
    ``<|image_pad|>`` tokens among the row's real response tokens get ``mm_token_type_ids`` 1.

    Text-only batches get explicit ``position_ids`` (cumulative over the attention mask) so left
    padding does not shift positions; with images the Qwen-VL models compute their 3-D M-RoPE
    positions from ``attention_mask`` and ``mm_token_type_ids`` themselves.
    """
    rows = len(contexts)
    ctx_len = max(int(c["input_ids"].numel()) for c in contexts)
    t_len = 0 if responses is None else int(responses.shape[1])
    pad = bundle.pad_token_id
    input_ids = torch.full((rows, ctx_len + t_len), pad, dtype=torch.long)
    attention = torch.zeros((rows, ctx_len + t_len), dtype=torch.long)
    mm_types = torch.zeros((rows, ctx_len + t_len), dtype=torch.long)
    for r, c in enumerate(contexts):
        n = int(c["input_ids"].numel())
        input_ids[r, ctx_len - n:ctx_len] = c["input_ids"]
        attention[r, ctx_len - n:ctx_len] = 1
        if "mm_token_type_ids" in c:
            mm_types[r, ctx_len - n:ctx_len] = c["mm_token_type_ids"]
    if responses is not None:
        mask = response_attention.to(torch.long)
        input_ids[:, ctx_len:] = torch.where(mask.bool(), responses, torch.full_like(responses, pad))
        attention[:, ctx_len:] = mask
        if response_images is not None and any(response_images):
            pad_id = token_id(bundle.tokenizer, "<|image_pad|>")
            mm_types[:, ctx_len:] = ((responses == pad_id) & mask.bool()).long()
    batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention}
    pixels, grids = [], []
    for r, c in enumerate(contexts):
        if "pixel_values" in c:
            pixels.append(c["pixel_values"])
            grids.append(c["image_grid_thw"])
        for im in (response_images[r] if response_images is not None else []):
            pixels.append(im.pixel_values)
            grids.append(im.image_grid_thw)
    if pixels:
        batch["pixel_values"] = torch.cat(pixels)
        batch["image_grid_thw"] = torch.cat(grids)
        if _accepts(bundle.model, "mm_token_type_ids"):
            batch["mm_token_type_ids"] = mm_types
    else:
        batch["position_ids"] = (attention.cumsum(-1) - 1).clamp(min=0)
    return batch, ctx_len


def _accepts(model: torch.nn.Module, arg: str) -> bool:
    return arg in inspect.signature(model.forward).parameters


def _to_device(batch: dict[str, Any], bundle: PolicyBundle) -> dict[str, Any]:
    device = bundle.device
    dtype = next(bundle.model.parameters()).dtype
    out = {}
    for k, v in batch.items():
        if k == "pixel_values":
            out[k] = v.to(device=device, dtype=dtype)
        else:
            out[k] = v.to(device)
    return out


def _base_model(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, model.base_model_prefix)


def _check_no_placeholders(bundle: PolicyBundle, responses: torch.Tensor, mask: torch.Tensor) -> None:
    """A VLM's forward matches image features to placeholder tokens: they cannot occur among the
    tokens the policy generated (``mask``: the loss mask; observation tokens may hold images)."""
    for name in ("<|image_pad|>", "<|video_pad|>"):
        if (tid := token_id(bundle.tokenizer, name)) is not None:
            hits = ((responses == tid) & mask.bool()).nonzero()
            if len(hits):
                raise ValueError(f"response row {int(hits[0, 0])} contains {name} at position {int(hits[0, 1])}; "
                                 "a VLM cannot score it (rollout engines must suppress placeholder tokens)")


def _check_observation_images(bundle: PolicyBundle, rows: Trajectories) -> None:
    """Observation images are only valid for a VLM scorer with the policy's image processor, and
    their ``<|image_pad|>`` counts must match the tokens the rows hold."""
    if not rows.response_images or not any(rows.response_images):
        return
    if not bundle.is_vlm:
        raise ValueError(f"{bundle.path!r} is a text-only model and cannot score trajectories with image "
                         "observations (their <|image_pad|> tokens need the policy's vision inputs)")
    key = processor_key(bundle)
    pad_id = token_id(bundle.tokenizer, "<|image_pad|>")
    valid = rows.attention_mask.bool()
    for r, images in enumerate(rows.response_images):
        for im in images:
            if im.processor_key != key:
                raise ValueError(f"the image processor of {bundle.path!r} differs from the one that rendered the "
                                 "trajectories' observation images; their token counts would not align")
        expected = sum(int(im.n_tokens) for im in images)
        held = int(((rows.response_ids[r] == pad_id) & valid[r]).sum())
        if held != expected:
            raise ValueError(f"row {r}: the response holds {held} observation <|image_pad|> tokens but its "
                             f"{len(images)} observation images need {expected}")


def _forward_hidden(bundle: PolicyBundle, contexts: list[dict], rows: Trajectories) -> torch.Tensor:
    """Final (normed) hidden states at the columns predicting each response token of ``rows``
    (a ``Trajectories``, e.g. ``harness.update.select_rows(traj, idx)``; ``contexts[i]`` is the
    rendered context of row ``i``): (B, T, H). The model attends to ``rows.attention_mask`` (every
    real response token, observations included) and sees each row's observation images; values at
    non-generated positions are not meaningful (callers mask with ``rows.response_mask``)."""
    if bundle.is_vlm:
        _check_no_placeholders(bundle, rows.response_ids, rows.response_mask)
    _check_observation_images(bundle, rows)
    batch, ctx_len = collate(bundle, contexts, rows.response_ids, rows.attention_mask, rows.response_images)
    batch = _to_device(batch, bundle)
    out = _base_model(bundle.model)(**batch, use_cache=False)
    t_len = rows.response_ids.shape[1]
    return out.last_hidden_state[:, ctx_len - 1:ctx_len - 1 + t_len]


def _drops_images(traj: Trajectories, view: View) -> bool:
    """Whether ``view`` removes the images of any sample of ``traj`` that has them."""
    if isinstance(view, str) and "text_only" in [p.strip() for p in view.split("+")]:
        return True
    return any(s.images and not apply_view(s, view).images for s in traj.samples)


def _check_view(bundle: PolicyBundle, traj: Trajectories, view: View) -> None:
    if traj.response_images and any(traj.response_images) and _drops_images(traj, view):
        raise ValueError(f"view {view!r} removes the images, but the trajectories hold image observations "
                         "(their <|image_pad|> tokens need vision inputs); score them with an image view")


def _take_rows(traj: Trajectories, rows: list[int]) -> Trajectories:
    from harness.update import select_rows  # deferred: harness.update is a trainer module

    return traj if rows == list(range(len(traj))) else select_rows(traj, rows)


def logprobs_from_hidden(hidden: torch.Tensor, lm_head: Callable[[torch.Tensor], torch.Tensor], ids: torch.Tensor,
                         chunk_tokens: int | None = None, grad: bool = False) -> torch.Tensor:
    """``log softmax(lm_head(hidden))[ids]`` in fp32, in token chunks (each chunk's logits are
    recomputed in backward when ``grad``), so the (B*T, V) logits are never all in memory.
    ``chunk_tokens`` None: ``harness.chunking.tokens_per_chunk(V)`` (a byte budget per chunk)."""
    b, t, h = hidden.shape
    if chunk_tokens is None:
        chunk_tokens = tokens_per_chunk(_vocab_size(lm_head))
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    flat_h, flat_ids = hidden.reshape(b * t, h), ids.reshape(b * t).to(hidden.device)

    def piece(hh: torch.Tensor, ii: torch.Tensor) -> torch.Tensor:
        logits = lm_head(hh).float()
        return logits.gather(-1, ii[:, None]).squeeze(-1) - logits.logsumexp(-1)

    out = []
    for start in range(0, b * t, chunk_tokens):
        hh, ii = flat_h[start:start + chunk_tokens], flat_ids[start:start + chunk_tokens]
        out.append(checkpoint(piece, hh, ii, use_reentrant=False) if grad and hh.requires_grad else piece(hh, ii))
    return torch.cat(out).reshape(b, t) if out else hidden.new_zeros((b, t), dtype=torch.float32)


def _vocab_size(lm_head: Callable[[torch.Tensor], torch.Tensor]) -> int:
    """Output size of the language-model head: ``out_features`` of a linear head, else its
    weight's rows (``ds_shape`` under ZeRO-3, whose partitioned weight is an empty placeholder);
    a head without either (a plain function) needs an explicit ``chunk_tokens``."""
    if isinstance(getattr(lm_head, "out_features", None), int):
        return int(lm_head.out_features)  # type: ignore[attr-defined]
    weight = getattr(lm_head, "weight", None)
    if weight is None:
        raise ValueError("lm_head has no weight to size chunks by: pass chunk_tokens "
                         "(harness.chunking.tokens_per_chunk(V))")
    return int(getattr(weight, "ds_shape", weight.shape)[0])


def end_of_turn_id(tokenizer: Any) -> int:
    """``<|im_end|>`` where the tokenizer has it, else its EOS id."""
    tid = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid is not None:
        return tid
    return int(tokenizer.eos_token_id)


def encode_pairs(bundle: PolicyBundle, samples: list[Sample], view: View = "full", max_length: int | None = None,
                 device: str | torch.device = "cpu") -> Trajectories:
    """(prompt, reference response) rows -> Trajectories for supervised training: the rendered prompt
    (left-padded) and ``sample.response`` ids plus the end-of-turn token (right-padded, cut to
    ``max_length``); ``response_mask`` marks the target tokens.

    A tool-use trace (``sample.meta["response_segments"]``: a list whose items are generated text
    (``str``, trained on) or tool observations (``harness.tools.Observation``)) is encoded as a
    multi-turn rollout would hold it: each observation rendered as an observation turn by
    ``harness.rollout.multiturn.render_observation`` (its images processed by ``bundle``'s image
    processor and attended to, ``response_images``), with loss mask 0 on the observation tokens
    (``response_valid`` marks every real token). A trace is cut to ``max_length`` too; an
    observation that would be cut is left out whole, with the rest of the trace."""
    tok = bundle.tokenizer
    eot = end_of_turn_id(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eot
    prompts = [render_prompt(bundle, s, view)["input_ids"].reshape(-1) for s in samples]
    responses, masks, images = [], [], []
    for s in samples:
        segments = s.meta.get("response_segments")
        if not segments:
            ids = (tok(s.response, add_special_tokens=False)["input_ids"] + [eot])[:max_length]
            responses.append(ids), masks.append([1] * len(ids)), images.append([])
            continue
        ids, mask, row_images = _encode_segments(bundle, segments, max_length)
        responses.append(ids), masks.append(mask), images.append(row_images)
    B, P, T = len(samples), max(len(p) for p in prompts), max(len(r) for r in responses)
    prompt_ids = torch.full((B, P), pad, dtype=torch.long)
    prompt_mask = torch.zeros((B, P), dtype=torch.long)
    response_ids = torch.full((B, T), pad, dtype=torch.long)
    response_mask = torch.zeros((B, T), dtype=torch.long)
    response_valid = torch.zeros((B, T), dtype=torch.long)
    for i, (p, r, m) in enumerate(zip(prompts, responses, masks)):
        prompt_ids[i, P - len(p):], prompt_mask[i, P - len(p):] = p, 1
        response_ids[i, :len(r)], response_mask[i, :len(r)] = torch.tensor(r, dtype=torch.long), \
            torch.tensor(m, dtype=torch.long)
        response_valid[i, :len(r)] = 1
    multi = any(images) or any(0 in m for m in masks)
    return Trajectories(samples=list(samples), prompt_ids=prompt_ids.to(device), prompt_mask=prompt_mask.to(device),
                        response_ids=response_ids.to(device), response_mask=response_mask.to(device),
                        old_logp=torch.zeros((B, T), device=device), group_ids=torch.arange(B, device=device),
                        texts=[s.response or "" for s in samples],
                        response_valid=response_valid.to(device) if multi else None,
                        response_images=images if multi else None)


def _encode_segments(bundle: PolicyBundle, segments: list[Any], max_length: int | None
                     ) -> tuple[list[int], list[int], list[Any]]:
    """Token ids, loss mask and observation images of a tool-use trace (see ``encode_pairs``)."""
    from harness.rollout.multiturn import render_observation
    from harness.tools import Observation

    tok = bundle.tokenizer
    ids: list[int] = []
    mask: list[int] = []
    images: list[Any] = []
    limit = max_length if max_length is not None else float("inf")
    for seg in segments:
        if isinstance(seg, Observation):
            obs_ids, obs_images = render_observation(bundle, seg)
            if len(ids) + len(obs_ids) > limit:
                break
            ids += obs_ids
            mask += [0] * len(obs_ids)
            images += obs_images
        elif isinstance(seg, str):
            seg_ids = tok(seg, add_special_tokens=False)["input_ids"]
            ids += seg_ids
            mask += [1] * len(seg_ids)
        else:
            raise TypeError(f"response segment must be text or an Observation, got {type(seg).__name__}")
    if len(ids) < limit:
        ids.append(end_of_turn_id(tok))
        mask.append(1)
    n = int(min(len(ids), limit))
    return ids[:n], mask[:n], images


def _row_groups(traj: Trajectories, micro_batch_size: int | None) -> list[list[int]]:
    rows = list(range(len(traj)))
    size = micro_batch_size or len(rows) or 1
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def token_logprobs(bundle: PolicyBundle, traj: Trajectories, view: View = "full", *, grad: bool = False,
                   micro_batch_size: int | None = None) -> torch.Tensor:
    """Log-probabilities ``(B, T)`` (fp32, 0 outside the loss mask ``traj.response_mask``) that ``bundle`` assigns to each response
    token of ``traj`` given the context ``view`` builds, at temperature 1 (the raw distribution).

    ``grad=True`` keeps the graph (the policy's loss); otherwise runs under ``torch.no_grad``.
    Rows are processed ``micro_batch_size`` at a time (all at once when None).
    """
    _check_view(bundle, traj, view)
    contexts = rendered_contexts(bundle, traj, view)
    lm_head = bundle.model.get_output_embeddings()
    pieces = []
    with torch.set_grad_enabled(grad):
        for rows in _row_groups(traj, micro_batch_size):
            part = _take_rows(traj, rows)
            hidden = _forward_hidden(bundle, [contexts[int(traj.group_ids[r])] for r in rows], part)
            logp = logprobs_from_hidden(hidden, lm_head, part.response_ids, grad=grad)
            pieces.append(logp * part.response_mask.to(logp.device, logp.dtype))
    return torch.cat(pieces)


def response_hidden_states(bundle: PolicyBundle, traj: Trajectories, view: View = "full", *,
                           grad: bool = False, micro_batch_size: int | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hidden (B, T, H), lm_head weight (V, H))``: the final hidden state at the position that
    predicts each response token (zeroed outside the loss mask), for the chunked full-vocabulary losses
    (``logits = hidden @ weight.T``). Without ``grad`` the weight is whole even when the model is
    sharded (``harness.models.full_weight``: gathered, a collective)."""
    _check_view(bundle, traj, view)
    contexts = rendered_contexts(bundle, traj, view)
    pieces = []
    with torch.set_grad_enabled(grad):
        for rows in _row_groups(traj, micro_batch_size):
            part = _take_rows(traj, rows)
            hidden = _forward_hidden(bundle, [contexts[int(traj.group_ids[r])] for r in rows], part)
            pieces.append(hidden * part.response_mask.to(hidden.device, hidden.dtype)[..., None])
    weight = bundle.model.get_output_embeddings().weight
    return torch.cat(pieces), (weight if grad else full_weight(weight))
