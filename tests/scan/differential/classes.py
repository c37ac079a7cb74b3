"""Name the parser-differential class a miss most likely belongs to, and describe a mutant.

The classes are issue 10's: 1 sniff order, 2 a probe that gives up, 3 joblib's array wrapper,
4 legacy torch streams, 5 containers the standard library reads, 6 NPY headers, 7 old joblib
compression and concatenated streams. The rules are a first guess from the mutation steps, the
seed and the format the scanner settled on; a person confirms the class when saving a
regression.
"""

from __future__ import annotations

from tests.scan.differential.campaign import Outcome, replay

CLASSES = {
    1: "1 sniff order",
    2: "2 probe gives up on a valid pickle",
    3: "3 joblib NumpyArrayWrapper read one way",
    4: "4 legacy torch streams",
    5: "5 containers the stdlib reads",
    6: "6 NPY headers numpy accepts",
    7: "7 old joblib compression / concatenated streams",
}


_LAYER_FORMATS = {
    "gzip": ("gzip",),
    "zlib": ("zlib",),
    "bz2": ("bz2",),
    "xz": ("xz",),
    "lzma": ("lzma", "xz"),
    "lz4": ("lz4",),
    "zip": ("zip", "pytorch-zip", "npz"),
    "tar": ("tar", "pytorch-tar"),
    "zf": ("joblib-zf",),
}
_CONTAINERS = frozenset(f for fs in _LAYER_FORMATS.values() for f in fs) | {"json", "safetensors"}


def hint_class(out: Outcome) -> str:
    """A first guess at the class, from the steps, the seed's layers and the scanner's formats."""
    from tests.scan.differential.seeds import build_seeds

    family = out.recipe.seed_id.replace("+evil", "")
    seed = build_seeds()[out.recipe.seed_id]
    steps = {s for s, _ in out.recipe.steps}
    parts = out.scan.fmt.split("+")
    notes = " ".join(replay(out.recipe).notes) if out.recipe.steps else ""
    own = {f for _, n in seed.root.walk() for f in _LAYER_FORMATS.get(n.kind, ())}
    if "zf.header" in steps or (
        "comp.split" in steps and any(k in family for k in ("lzma", "lz4", "xz", "bz2", "zlib"))
    ):
        return CLASSES[7]
    if "npy.field" in steps or "npy.to_object" in steps:
        return CLASSES[6]
    if any(k in notes for k in ("v7", "decoy", "count_delta", "duplicated", "cd_offset")):
        return CLASSES[5]
    if family.startswith("torch-legacy"):
        return CLASSES[4]
    if family.startswith("joblib") and steps & {"joblib.wrapper", "joblib.padding_ops"}:
        return CLASSES[3]
    # the scanner settled on a container or compression the seed does not have, or on a
    # pickle in front of the archive a loader reads: it took the file for one format only
    if any(p in _CONTAINERS and p not in own for p in parts) or (
        parts[0] == "pickle" and own & {"zip", "tar"}
    ):
        return CLASSES[1]
    if "unknown" in parts or "empty" in parts:
        return CLASSES[2]
    return (
        "new: " + (",".join(sorted(steps)) or "unmutated seed") + f" (scan format {out.scan.fmt})"
    )


def describe(out: Outcome) -> str:
    """What was done to the seed, what the loaders did and what the scanner said."""
    sample = replay(out.recipe)
    done = "; ".join(sample.notes) or "unmutated"
    hits = "; ".join(f"{k} reached {', '.join(v[:3])}" for k, v in out.reached.items())
    worst = out.scan.worst.name if out.scan.worst is not None else "no finding"
    return (
        f"seed {out.recipe.seed_id} as {sample.name!r}: {done}. Loaders: {hits}. "
        f"Scanner: format {out.scan.fmt}, worst {worst}"
        + (f" ({', '.join(out.scan.findings[:3])})" if out.scan.findings else "")
    )
