"""Data: adapters from Hugging Face datasets to ``Sample`` and synthetic smoke generators."""
