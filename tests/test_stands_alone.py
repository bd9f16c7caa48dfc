"""The repository stands alone: no file points at the reading aids outside it (the workspace's
shared folder, its design and method notes). Scans every tracked file (``git ls-files``; without
git, every file under the repository but virtual environments and caches), so it never skips."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# built from pieces so that this file does not match itself
OUTSIDE = re.compile("|".join([r"shar" + r"ed/", r"METH" + r"ODS\.md", r"DES" + r"IGN\.md"]))
SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", ".hypothesis", "node_modules"}


def _files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
        if names:
            return [ROOT / n for n in names]
    except (OSError, subprocess.CalledProcessError):
        pass
    return [p for p in ROOT.rglob("*") if p.is_file()
            and not any(part in SKIP_DIRS or part.startswith(".venv") for part in p.relative_to(ROOT).parts)]


def test_nothing_points_outside_the_repository():
    hits = []
    files = _files()
    assert len(files) > 100
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary files (images, safetensors)
        for i, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()[:120]}")
    assert not hits, "\n".join(hits)
