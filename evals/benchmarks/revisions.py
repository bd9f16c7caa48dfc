"""Pinned data-set revisions, benchmark name -> git revision (commit SHA) of the Hugging Face data set.

Every SHA below was read verbatim, as a full 40-hex commit id, from a stored copy of a
huggingface.co page whose repository path is that data set (URL in the comment next to it); none
was completed from a short hash. The pages were read offline (no hub access), so a pin is the
newest commit of that repository *seen*, not necessarily the repository's head today; notes say
where a later commit is known to exist. Benchmarks absent from ``REVISIONS`` load ``"main"``
(``Benchmark.revision``); replace them with ``huggingface_hub.dataset_info(id).sha`` after a first
download. ``evals run`` records the revision in each summary.
"""

# AI4Math/MathVista — head of main when crawled (34 commits, "Update README.md"); testmini 1,000.
# https://huggingface.co/datasets/AI4Math/MathVista/tree/2b6ad69445fbb5695c9b165475e8decdbeb97747
_MATHVISTA = "2b6ad69445fbb5695c9b165475e8decdbeb97747"

# AI4Math/MathVerse — 30 commits, after "Add question_for_eval"; testmini.parquet present.
# A later README-only commit (license) exists on main; its SHA was not seen.
# https://huggingface.co/datasets/AI4Math/MathVerse/tree/268dfc55b62296be3bdf6406d6dea07bd06a7d64
_MATHVERSE = "268dfc55b62296be3bdf6406d6dea07bd06a7d64"

# MMMU/MMMU_Pro — "Update README.md" after both `standard` and `vision` uploads (8 commits).
# https://huggingface.co/datasets/MMMU/MMMU_Pro/tree/c13f5eb25de0f10a5041756f43d9d75158bd047c
_MMMU_PRO = "c13f5eb25de0f10a5041756f43d9d75158bd047c"

REVISIONS: dict[str, str] = {
    "mathvista": _MATHVISTA,
    "mathvista_mc": _MATHVISTA,
    "mathverse": _MATHVERSE,
    "mathverse_vd": _MATHVERSE,
    "mathverse_vo": _MATHVERSE,
    "mathverse_v": _MATHVERSE,
    "mathverse_mc": _MATHVERSE,
    # MathLLMs/MathVision — 14 commits, data/test + data/testmini parquet (original release).
    # NOTE: main later fixed the answers of IDs 338 (B->D) and 1826 (D->E) (short hash a9c9d42 only).
    # https://huggingface.co/datasets/MathLLMs/MathVision/tree/14b5e86a95856c4231a056b82f658584eae2b309
    "mathvision": "14b5e86a95856c4231a056b82f658584eae2b309",
    "mmmu_pro": _MMMU_PRO,
    "mmmu_pro_4": _MMMU_PRO,
    "mmmu_pro_10": _MMMU_PRO,
    # Lin-Chen/MMStar — head of main when crawled (7 commits; main page shows bc98d66).
    # https://huggingface.co/datasets/Lin-Chen/MMStar/tree/bc98d668301da7b14f648724866e57302778ab27
    "mmstar": "bc98d668301da7b14f648724866e57302778ab27",
    # DynaMath/DynaMath_Sample — 28 commits; the data/ folder on main last changed at this commit.
    # https://huggingface.co/datasets/DynaMath/DynaMath_Sample/tree/172ee11086d0d2165517a2e92c9bde8bba4b7945
    "dynamath": "172ee11086d0d2165517a2e92c9bde8bba4b7945",
    # HuggingFaceH4/MATH-500 — head of main ("Update README.md", 4 commits in all).
    # https://huggingface.co/datasets/HuggingFaceH4/MATH-500/commits/ff5b20257d8185524591543f8ff5993951537bb8
    "math500": "ff5b20257d8185524591543f8ff5993951537bb8",
    # Hothan/OlympiadBench — main branch, "Update README.md" (4 commits; OlympiadBench/ data folder).
    # https://huggingface.co/datasets/Hothan/OlympiadBench/tree/3b426ee1d587c71b495146dde9f3e995ee7ac59f
    "olympiadbench": "3b426ee1d587c71b495146dde9f3e995ee7ac59f",
    # lmms-lab/HallusionBench — last data upload (data/image + data/non_image); main's later head
    # (cd41716) only edits README.md.
    # https://huggingface.co/datasets/lmms-lab/HallusionBench/tree/ea5fd49f1b711d12cc8b0ec75be0c0593e17befe
    "hallusionbench": "ea5fd49f1b711d12cc8b0ec75be0c0593e17befe",
    # craigwu/vstar_bench — "Uploading ground truth labels" (adds the `label` field this loader needs).
    # This is the head of refs/pr/3; main's d9ae62c is its merge (same files, test_questions.jsonl
    # 51.6 kB). The earlier main commit 5914e9c has no labels, so it is not usable.
    # https://huggingface.co/datasets/craigwu/vstar_bench/tree/eed4d0e89077fabfeb792be9cee004019abe3528
    "vstar": "eed4d0e89077fabfeb792be9cee004019abe3528",
    # neulab/VisualPuzzles — the commit that renamed the split `train` -> `test` (data.parquet).
    # https://huggingface.co/datasets/neulab/VisualPuzzles/commit/121e4ff2aa9ed04d04d972dd3847acefca421e0b
    "visualpuzzles": "121e4ff2aa9ed04d04d972dd3847acefca421e0b",
}
