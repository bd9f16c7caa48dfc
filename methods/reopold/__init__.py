"""REOPOLD, relaxed on-policy distillation (arXiv 2603.11137): ``python -m methods.reopold --profile smoke``."""
