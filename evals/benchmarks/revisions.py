"""Pinned data-set revisions, benchmark name -> git revision of the Hugging Face data set.

No commit hash could be verified offline when this table was written, so every entry is "main";
``evals run`` records the revision in each summary. Replace an entry with the commit hash once a
run has downloaded the data (``huggingface_hub.dataset_info(id).sha``) to make results reproducible.
"""
REVISIONS: dict[str, str] = {}
