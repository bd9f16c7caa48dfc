"""``load_training_set``: one entry point for every training set, real or synthetic.

Names: the real sets of :data:`harness.data.training_sets.TRAINING_SETS` (orz-57k,
mixture-of-thoughts[-math|-code|-science], geometry3k, geometry3k-noisyrollout, mmk12,
openr1-math-46k, vision-sr1-47k, virl39k, pixelreasoner-rl) and the offline synthetic sets of
the smoke profile:

* ``smoke-text-math`` — :func:`harness.data.synthetic.text_math`
* ``smoke-visual``    — :func:`harness.data.synthetic.visual`
* ``smoke-learnable`` — :func:`harness.data.synthetic.learnable` (reward rises within a few
  dozen RL steps even for a tiny model; see its docstring)

and the real small sets shipped in registry packages (:mod:`harness.data.packaged`):

* ``easy-vqa`` — colour / shape questions about real 64x64 shape images whose answer needs the
  image (:func:`harness.data.packaged.easy_vqa`; a verifiable one-word answer)
* ``easy-vqa-color`` — the colour questions of ``easy-vqa`` alone, asked free form (the task a
  tiny smoke model learns in a few dozen supervised steps: docs/smoke_profile.md)
* ``champ`` — 270 competition math problems with solutions and answer-free hints
  (:func:`harness.data.packaged.champ`)
* ``smoke-tool-traces`` — scripted tool-use SFT traces on easy-vqa questions: a ``crop_image``
  call, its real observation (the cropped image), the boxed answer
  (:func:`harness.data.packaged.easy_vqa_tool_traces`; the smoke tool-using warm start)

Synthetic splits use different seeds (train 0, validation 1, test 2), ``limit`` rows each
(:data:`SMOKE_DEFAULT_SIZE` when None).
"""
from __future__ import annotations

from pathlib import Path

from harness.data import packaged, synthetic
from harness.data.training_sets import MAPPERS, TRAINING_SETS, load_rows, load_spec
from harness.types import Sample
from harness.errors import DataError, UnknownNameError

__all__ = ["load_training_set", "training_set_names", "SMOKE_SETS", "PACKAGED_SETS", "SMOKE_DEFAULT_SIZE"]

SMOKE_DEFAULT_SIZE = 64
SMOKE_SETS = {
    "smoke-text-math": synthetic.text_math,
    "smoke-visual": synthetic.visual,
    "smoke-learnable": synthetic.learnable,
}
_SMOKE_SEEDS = {"train": 0, "validation": 1, "test": 2}
PACKAGE_OF = {"easy-vqa": "easy-vqa", "easy-vqa-color": "easy-vqa", "champ": "champ-dataset", "smoke-tool-traces": "easy-vqa"}
"""Packaged training sets and the registry package that ships each."""
PACKAGED_SETS = tuple(PACKAGE_OF)
_KEEP = object()


def training_set_names() -> list[str]:
    """Every name :func:`load_training_set` accepts (besides paths and hub ids)."""
    return sorted(TRAINING_SETS) + sorted(SMOKE_SETS) + sorted(PACKAGED_SETS)


def load_training_set(name_or_path: str | Path, split: str = "train", limit: int | None = None,
                      revision: str | None = None, *, schema: str | None = None,
                      instruction: str | None | object = _KEEP) -> list[Sample]:
    """Load a training set as a list of :class:`Sample`.

    ``name_or_path`` is a registered name (loads its hub id at ``revision``, or the spec's
    pinned one), a smoke name, a hub id, or a local path. For a path or an unregistered hub id,
    ``schema`` names the registered set (e.g. ``"geometry3k"``) or the mapper (``"easyr1"``)
    whose mapping to apply; without it the schema is guessed from the first row's keys.
    ``instruction`` overrides the answer-format instruction appended to the question
    (a key of :data:`harness.data.prompts.INSTRUCTIONS`, literal text, or None for none).
    """
    key = str(name_or_path)
    kw = {} if instruction is _KEEP else {"instruction": instruction}
    if key in SMOKE_SETS:
        if split not in _SMOKE_SEEDS:
            raise ValueError(f"{key}: unknown split {split!r}; known: {sorted(_SMOKE_SEEDS)}")
        n = SMOKE_DEFAULT_SIZE if limit is None else limit
        if key == "smoke-learnable":
            return synthetic.learnable(n, _SMOKE_SEEDS[split])
        return SMOKE_SETS[key](n, _SMOKE_SEEDS[split], **kw)
    if key == "easy-vqa":
        return packaged.easy_vqa(SMOKE_DEFAULT_SIZE if limit is None else limit, split, **kw)
    if key == "easy-vqa-color":
        return packaged.easy_vqa(SMOKE_DEFAULT_SIZE if limit is None else limit, split, kinds=("color",),
                                 form="free", **kw)
    if key == "champ":
        return packaged.champ(limit, split, **kw)
    if key == "smoke-tool-traces":
        return packaged.easy_vqa_tool_traces(SMOKE_DEFAULT_SIZE if limit is None else limit, split, **kw)
    if key in TRAINING_SETS:
        return load_spec(TRAINING_SETS[key], None, split, limit=limit, revision=revision, instruction=kw.get("instruction", ...))
    if schema in TRAINING_SETS:
        spec = TRAINING_SETS[schema]
        if Path(key).exists():
            return load_spec(spec, key, split, limit=limit, instruction=kw.get("instruction", ...))
        return load_rows(key, spec.schema, split, limit=limit, revision=revision, config=spec.config,
                         hub_files=spec.hub_files, instruction=kw.get("instruction", spec.instruction),
                         prefix=spec.name)
    by_hub = [s for s in TRAINING_SETS.values() if s.hub_id == key and schema is None]
    if by_hub and not Path(key).exists():
        return load_spec(by_hub[0], None, split, limit=limit, revision=revision, instruction=kw.get("instruction", ...))
    if schema is not None and schema not in MAPPERS:
        raise DataError(key, None, "schema", f"unknown schema {schema!r}; known: "
                        f"{training_set_names() + sorted(MAPPERS)}")
    if not Path(key).exists() and key.startswith(("/", ".", "~")):
        raise DataError(key, None, None, "no such training-set file or directory")
    if not Path(key).exists() and "/" not in key:
        raise UnknownNameError(f"unknown training set {key!r}; known: {training_set_names()} "
                       "(or give a local path / hub id)")
    return load_rows(key, schema, split, limit=limit, revision=revision,
                     instruction=kw.get("instruction", "step_by_step"))
