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


def hint_class(out: Outcome) -> str:
    family = out.recipe.seed_id.replace("+evil", "")
    steps = {s for s, _ in out.recipe.steps}
    fmt = out.scan.fmt
    notes = " ".join(replay(out.recipe).notes) if out.recipe.steps else ""
    if "zf.header" in steps or (
        "comp.split" in steps and any(k in family for k in ("lzma", "lz4", "xz", "bz2", "zlib"))
    ):
        return CLASSES[7]
    if "npy.field" in steps or "npy.to_object" in steps:
        return CLASSES[6]
    if "tar.field" in steps or "archive.dup_member" in steps or "decoy" in notes:
        return CLASSES[5]
    if family.startswith("torch-legacy"):
        return CLASSES[4]
    if family.startswith("joblib") and (
        steps & {"joblib.wrapper", "joblib.padding_ops", "raw.to_ops"}
    ):
        return CLASSES[3]
    parts = fmt.split("+")
    containers = ("tar", "zlib", "gzip", "bz2", "xz", "lzma", "lz4", "zip", "json", "safetensors")
    plain = family.startswith("pickle-") or family == "pandas-none"
    if plain and parts[0] in containers:
        return CLASSES[1]
    if "unknown" in parts or "I010" in notes or "]Nb" in notes:
        return CLASSES[2]
    return "new: " + (",".join(sorted(steps)) or "unmutated seed") + f" (scan format {fmt})"


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
