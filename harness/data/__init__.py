"""Data: adapters from Hugging Face datasets to ``Sample`` and synthetic smoke generators.

``load_training_set(name_or_path, split, limit, revision)`` is the entry point (registry.py);
``synthetic`` generates offline tasks; ``prompts`` holds the answer-format instructions.
"""
from harness.data.registry import load_training_set, training_set_names

__all__ = ["load_training_set", "training_set_names"]
