"""Saved scanner misses (``tests/scan/regressions/*.json``): recipes that regenerate a mutant.

Each file holds the recipe (seed id, campaign seed, index, the applied steps), the sha256 of the
bytes it gave when it was saved, the class of parser differential it belongs to (issue 10's
classes 1-7, or a new one), ``status`` (``open``: the scanner still misses it, the test is an
expected failure; ``fixed``: it must be caught), and what the loaders and the scanner saw then.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.scan.differential.campaign import Recipe

FOLDER = Path(__file__).resolve().parent.parent / "regressions"


@dataclass(frozen=True)
class Regression:
    path: Path
    recipe: Recipe
    klass: str
    status: str
    sha256: str
    note: str

    @property
    def open(self) -> bool:
        return self.status == "open"


def load(folder: Path = FOLDER) -> list[Regression]:
    out = []
    for p in sorted(folder.glob("*.json")):
        d = json.loads(p.read_text())
        out.append(
            Regression(
                p,
                Recipe.from_json(d["recipe"]),
                str(d["class"]),
                str(d.get("status", "open")),
                str(d.get("sha256", "")),
                str(d.get("note", "")),
            )
        )
    return out


def known_keys(folder: Path = FOLDER) -> dict[str, str]:
    """Recipe key -> sha256 of the saved bytes, for the open regressions (the campaign test
    tolerates exactly these mutants)."""
    return {r.recipe.key: r.sha256 for r in load(folder) if r.open}
