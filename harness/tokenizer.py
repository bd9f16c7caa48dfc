"""An offline Qwen-style tokenizer for the smoke profile.

No model hub is reachable in tests, so the tiny smoke models share one small byte-level BPE
tokenizer trained here, deterministically, on generated math text. It carries the Qwen special
tokens (same names and roles as the real Qwen2.5 / Qwen3 vocabularies, not the same ids), the
``<think>`` / ``</think>`` tags (added, non-special tokens as in Qwen3) and the Qwen2-VL chat
template, so prompts render exactly as a real Qwen model's would.
"""
from __future__ import annotations

import functools
import random

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
