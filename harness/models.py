"""Load policy, teacher and reference models (Hugging Face format) into a ``PolicyBundle``.

Every model — a hub checkpoint, a local training output, or a tiny smoke model from
``harness.tiny`` — goes through the same ``load_model``: ``AutoModelForImageTextToText`` when the
config has a vision tower, ``AutoModelForCausalLM`` otherwise. The vision tower (the whole
``visual`` module, merger included) is frozen by default: VOLD and the other recipes train the
language model only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.tiny import TINY_KINDS, build_tiny_model, smoke_model_path  # noqa: F401  (public API)

__all__ = [
    "PolicyBundle", "VocabularyMismatchError", "load_model", "load_teacher", "save_bundle",
    "check_same_vocabulary", "freeze_vision_tower", "build_tiny_model", "smoke_model_path",
    "resolve_dtype", "is_sharded", "full_shape", "full_weight",
]

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


class VocabularyMismatchError(ValueError):
    """A teacher's vocabulary differs from the student's, so its token log-probs do not align."""


@dataclass
class PolicyBundle:
    """A model with what is needed to render prompts for it.

    ``processor`` is the image processor (``Qwen2VLImageProcessor[Pil]``) for a VLM and None for a
    text-only model; prompts are rendered by ``harness.scoring.render_prompt`` with the tokenizer's
    chat template.
    """

    model: Any
    tokenizer: Any
    processor: Any
    is_vlm: bool
    path: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def eos_token_ids(self) -> list[int]:
        """Token ids that end a response: the generation config's EOS ids plus the tokenizer's."""
        ids: list[int] = []
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for value in (gen_eos, self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")):
            for i in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(i, int) and i >= 0 and i != self.tokenizer.unk_token_id and i not in ids:
                    ids.append(i)
        return ids

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.eos_token_ids[0])


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(_DTYPES)}") from None


def _is_vlm_config(config: Any) -> bool:
    return getattr(config, "vision_config", None) is not None


def unwrap_model(model: Any) -> Any:
    """The module inside a DDP / DeepSpeed wrapper (``.module``), or ``model`` itself."""
    return getattr(model, "module", model)


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model``'s parameters are sharded over ranks (FSDP2 DTensors, ZeRO-3 partitions):
    then every forward is a collective, and all ranks must run the same ones."""
    from torch.distributed.tensor import DTensor

    p = next(model.parameters(), None)
    return isinstance(p, DTensor) or hasattr(p, "ds_id")


def full_shape(param: torch.Tensor) -> torch.Size:
    """A parameter's whole shape (``ds_shape`` under ZeRO-3, whose partitioned tensor is an empty
    placeholder; a DTensor's ``shape`` is already the global one)."""
    return getattr(param, "ds_shape", param.shape)


def full_weight(param: torch.Tensor) -> torch.Tensor:
    """The whole value of a parameter, detached: gathered from its shards (collective) when sharded
    (an FSDP2 DTensor, a ZeRO-3 partition), else the parameter itself."""
    if hasattr(param, "full_tensor"):
        return param.detach().full_tensor()
    if hasattr(param, "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters([param]):
            return param.data.detach().clone()
    return param.detach()


def freeze_vision_tower(model: torch.nn.Module) -> int:
    """Set ``requires_grad=False`` on every parameter of the ``visual`` module (patch embedding,
    blocks, merger, deepstack mergers). Returns the number of parameters frozen."""
    frozen = 0
    for name, param in model.named_parameters():
        if "visual" in name.split("."):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def load_model(name_or_path: str | Path, *, dtype: str | torch.dtype = "float32", device: str = "cpu",
               trainable: bool = True, freeze_vision: bool = True,
               trust_remote_code: bool = False) -> PolicyBundle:
    """Load a model, tokenizer and (for a VLM) image processor from a hub id or a local directory.

    ``trainable=False`` freezes every parameter (teacher, reference). The model is returned in
    eval mode either way: the Qwen models have no dropout, and eval keeps generation deterministic.
    """
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    path = str(name_or_path)
    tokenizer, processor, is_vlm = load_preprocessing(path, trust_remote_code=trust_remote_code)
    auto = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
    model = auto.from_pretrained(path, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code)
    model.to(device)
    model.eval()
    if not trainable:
        model.requires_grad_(False)
    elif is_vlm and freeze_vision:
        freeze_vision_tower(model)
    return PolicyBundle(model=model, tokenizer=tokenizer, processor=processor, is_vlm=is_vlm, path=path)


def resolve_model_name(name: str | Path) -> str:
    """``smoke:<kind>`` -> the cached tiny model of that kind (``smoke_model_path``); a hub id or a
    path is returned unchanged. Every command that takes a model accepts both."""
    name = str(name)
    return str(smoke_model_path(name.split(":", 1)[1])) if name.startswith("smoke:") else name


def load_preprocessing(name_or_path: str | Path, *, trust_remote_code: bool = False) -> tuple[Any, Any, bool]:
    """``(tokenizer, image processor or None, is_vlm)`` of a checkpoint, without its weights: the
    tokenizer left-padded and carrying a chat template (from ``chat_template.json`` where the
    checkpoint keeps it there). ``load_model`` and weight-less engines (vLLM) share it."""
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    path = str(name_or_path)
    is_vlm = _is_vlm_config(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code))
    key = _tokenizer_key(path, trust_remote_code)
    tokenizer = _TOKENIZERS.get(key) if key is not None else None
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        tokenizer.padding_side = "left"
        if tokenizer.chat_template is None:
            tokenizer.chat_template = _processor_chat_template(path)
        if key is not None:
            if len(_TOKENIZERS) >= 8:
                _TOKENIZERS.pop(next(iter(_TOKENIZERS)))
            _TOKENIZERS[key] = tokenizer
    processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code) if is_vlm else None
    return tokenizer, processor, is_vlm


_TOKENIZERS: dict[tuple, Any] = {}
"""Tokenizers loaded from local directories in this process, by ``_tokenizer_key``: a real-vocabulary
tokenizer takes seconds to parse, and a run loads the same one for its student, teacher and
reference. Bundles of one checkpoint share the object; nothing in the project mutates a loaded
tokenizer."""


def _tokenizer_key(path: str, trust_remote_code: bool) -> tuple | None:
    """(directory, its tokenizer files' names, sizes and mtimes) for a local checkpoint; None for a hub id."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    prefixes = ("tokenizer", "special_tokens", "chat_template", "vocab", "merges", "added_tokens")
    stats = ((f.name, f.stat()) for f in folder.iterdir() if f.name.startswith(prefixes))
    files = sorted((name, st.st_size, st.st_mtime_ns) for name, st in stats)
    return (str(folder.resolve()), trust_remote_code, tuple(files))


def _processor_chat_template(path: str) -> str | None:
    """Some VLM checkpoints keep the chat template in the processor's ``chat_template.json``."""
    import json

    from transformers.utils import cached_file

    file = cached_file(path, "chat_template.json", _raise_exceptions_for_missing_entries=False)
    if file is None:
        return None
    with open(file, encoding="utf-8") as f:
        return json.load(f).get("chat_template")


def save_bundle(bundle: PolicyBundle, out_dir: str | Path) -> Path:
    """``save_pretrained`` the model (safetensors), tokenizer and image processor: ``load_model`` reads it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bundle.model.save_pretrained(out)
    bundle.tokenizer.save_pretrained(out)
    if bundle.processor is not None:
        bundle.processor.save_pretrained(out)
    return out


def _embedding_rows(model: torch.nn.Module) -> tuple[int, int | None]:
    inp = full_shape(model.get_input_embeddings().weight)[0]
    out = model.get_output_embeddings()
    return inp, (full_shape(out.weight)[0] if out is not None else None)


def check_same_vocabulary(student: PolicyBundle, teacher: PolicyBundle, max_listed: int = 5) -> None:
    """Raise ``VocabularyMismatchError`` unless the two models share one vocabulary.

    Checks (1) the embedding / LM-head row counts (the distribution's support) and (2) the
    tokenizers' token -> id maps on the ids both define. The message says what differs.
    """
    problems = []
    s_rows, t_rows = _embedding_rows(student.model), _embedding_rows(teacher.model)
    if s_rows != t_rows:
        problems.append(f"embedding vocab size (input, output): student {s_rows} vs teacher {t_rows}")
    s_ids = {i: t for t, i in student.tokenizer.get_vocab().items()}
    t_ids = {i: t for t, i in teacher.tokenizer.get_vocab().items()}
    shared = min(max(s_ids, default=-1), max(t_ids, default=-1)) + 1
    differing = [i for i in range(shared) if s_ids.get(i) != t_ids.get(i)]
    if differing:
        listed = ", ".join(f"id {i}: student {s_ids.get(i)!r} vs teacher {t_ids.get(i)!r}"
                           for i in differing[:max_listed])
        problems.append(f"{len(differing)} of the {shared} shared token ids map to different tokens ({listed})")
    if problems:
        raise VocabularyMismatchError(
            f"teacher {teacher.path!r} does not share the student's ({student.path!r}) vocabulary: "
            + "; ".join(problems))


def load_teacher(name_or_path: str | Path, student: PolicyBundle, **kw) -> PolicyBundle:
    """Load a frozen teacher (eval mode, no grads); refuse one whose vocabulary differs from the student's."""
    kw.setdefault("device", str(student.device))
    kw["trainable"] = False
    teacher = load_model(name_or_path, **kw)
    check_same_vocabulary(student, teacher)
    return teacher
