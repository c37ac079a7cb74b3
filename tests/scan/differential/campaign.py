"""Generate mutants reproducibly, run them through the loaders and the scanner, keep the score.

A mutant is named by (seed id, campaign seed, index): the index picks nothing by itself, the
random source seeded with all three picks how many steps and which mutators; each applied step
is kept as (mutator name, step seed) in a :class:`Recipe`, so a saved recipe replays the same
bytes even after the selection logic changes.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.scan.differential.container_mutators import CONTAINER_MUTATORS
from tests.scan.differential.mutators import OPCODE_MUTATORS, Mutator
from tests.scan.differential.oracle import Scanner, ScanResult, reached, scan_path
from tests.scan.differential.runner import LOADERS, LoaderPool, LoaderResult
from tests.scan.differential.seeds import build_seeds
from tests.scan.differential.structure import Sample

MUTATORS: dict[str, tuple[Mutator, int]] = {**OPCODE_MUTATORS, **CONTAINER_MUTATORS}
_NAMES = sorted(MUTATORS)
_WEIGHTS = [MUTATORS[n][1] for n in _NAMES]


@dataclass
class Recipe:
    seed_id: str
    campaign_seed: int
    index: int
    steps: list[tuple[str, int]]
    name: str

    @property
    def key(self) -> str:
        return f"{self.seed_id}@{self.campaign_seed}#{self.index}"

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "steps": [list(s) for s in self.steps]}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Recipe:
        steps = d["steps"]
        assert isinstance(steps, list)
        return cls(
            str(d["seed_id"]),
            int(str(d["campaign_seed"])),
            int(str(d["index"])),
            [(str(a), int(b)) for a, b in steps],
            str(d["name"]),
        )


def apply(name: str, sample: Sample, step_seed: int) -> bool:
    """One mutator step; one that raises (or leaves a tree that cannot render) did not apply."""
    try:
        if not MUTATORS[name][0](sample, random.Random(step_seed)):
            return False
        sample.render()  # a tree that no longer renders is a step that did not apply
    except Exception:
        return False
    return True


def generate(seed_id: str, campaign_seed: int, index: int) -> tuple[Sample, Recipe]:
    seeds = build_seeds()
    rng = random.Random(f"{campaign_seed}:{seed_id}:{index}")
    want = rng.choice((1, 1, 1, 2, 2, 3))
    sample = seeds[seed_id].clone()
    steps: list[tuple[str, int]] = []
    attempts = 0
    while len(steps) < want and attempts < 30:
        attempts += 1
        name = rng.choices(_NAMES, _WEIGHTS)[0]
        step_seed = rng.getrandbits(32)
        trial = sample.clone()
        if apply(name, trial, step_seed):
            sample = trial
            steps.append((name, step_seed))
    return sample, Recipe(seed_id, campaign_seed, index, steps, sample.name)


def replay(recipe: Recipe) -> Sample:
    sample = build_seeds()[recipe.seed_id].clone()
    for name, step_seed in recipe.steps:
        if not apply(name, sample, step_seed):
            raise ValueError(f"{recipe.key}: step {name} no longer applies")
    return sample


@dataclass
class Outcome:
    recipe: Recipe
    size: int
    sha256: str
    loaders: dict[str, LoaderResult]
    scan: ScanResult
    malicious_origin: bool

    @property
    def reached(self) -> dict[str, tuple[str, ...]]:
        return {k: r for k, r in ((k, reached(v)) for k, v in self.loaders.items()) if r}

    @property
    def miss(self) -> bool:
        return bool(self.reached) and self.scan.passes

    def summary(self) -> dict[str, object]:
        return {
            "key": self.recipe.key,
            "recipe": self.recipe.to_json(),
            "size": self.size,
            "sha256": self.sha256,
            "reached": {k: list(v) for k, v in self.reached.items()},
            "loaders": {k: v.status for k, v in self.loaders.items()},
            "errors": {k: v.error[:160] for k, v in self.loaders.items() if v.error},
            "scan": {
                "worst": self.scan.worst.name if self.scan.worst is not None else None,
                "format": self.scan.fmt,
                "findings": list(self.scan.findings),
                "error": self.scan.error,
            },
        }


@dataclass
class Stats:
    mutants: int = 0
    executions: int = 0
    seeds_run: int = 0
    per_loader: dict[str, Counter[str]] = field(default_factory=dict)
    per_mutator: Counter[str] = field(default_factory=Counter)
    misses: list[Outcome] = field(default_factory=list)
    false_alarms: list[Outcome] = field(default_factory=list)
    seed_misses: list[Outcome] = field(default_factory=list)
    seed_false_alarms: list[Outcome] = field(default_factory=list)
    scan_errors: list[Outcome] = field(default_factory=list)
    reached_mutants: int = 0
    clean_benign_mutants: int = 0
    scan_seconds: float = 0.0
    slowest_scan: tuple[float, str] = (0.0, "")

    def count(self, outcome: Outcome) -> None:
        for name, res in outcome.loaders.items():
            c = self.per_loader.setdefault(name, Counter())
            c[res.status] += 1
            if reached(res):
                c["reached"] += 1
        self.executions += len(outcome.loaders)
        self.scan_seconds += outcome.scan.seconds
        if outcome.scan.seconds > self.slowest_scan[0]:
            self.slowest_scan = (outcome.scan.seconds, outcome.recipe.key)


class Campaign:
    """Runs seeds and mutants; ``scanner`` is replaceable so tests can plant a broken one."""

    def __init__(
        self,
        pool: LoaderPool,
        workdir: Path,
        campaign_seed: int,
        *,
        scanner: Scanner = scan_path,
        loaders: tuple[str, ...] = LOADERS,
        seed_ids: Iterable[str] | None = None,
    ) -> None:
        self.pool = pool
        self.workdir = Path(workdir)
        self.campaign_seed = campaign_seed
        self.scanner = scanner
        self.loaders = loaders
        self.seeds = build_seeds()
        self.seed_ids = sorted(seed_ids if seed_ids is not None else self.seeds)
        self.stats = Stats()
        self.seed_ok: dict[str, frozenset[str]] = {}

    def evaluate(self, sample: Sample, recipe: Recipe) -> Outcome:
        data = sample.render()
        folder = self.workdir / "m" / f"{recipe.index}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (sample.name or "model")
        path.write_bytes(data)
        try:
            loaders = self.pool.run(path, self.loaders)
            scan = self.scanner(path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        origin = self.seeds[recipe.seed_id].malicious
        return Outcome(recipe, len(data), hashlib.sha256(data).hexdigest(), loaders, scan, origin)

    def run_seeds(self) -> None:
        """Every unmutated seed: which loaders open it cleanly (for the false-alarm rule)."""
        for sid in self.seed_ids:
            sample = self.seeds[sid]
            out = self.evaluate(sample, Recipe(sid, self.campaign_seed, -1, [], sample.name))
            self.stats.count(out)
            self.stats.seeds_run += 1
            self.seed_ok[sid] = frozenset(k for k, v in out.loaders.items() if v.ok)
            if out.scan.error:
                self.stats.scan_errors.append(out)
            if out.miss:
                self.stats.seed_misses.append(out)
            elif not out.reached and not out.scan.passes and self.seed_ok[sid]:
                self.stats.seed_false_alarms.append(out)

    def false_alarm(self, out: Outcome) -> bool:
        if out.reached or out.scan.passes or out.scan.error:
            return False
        ok = self.seed_ok.get(out.recipe.seed_id, frozenset())
        now_ok = {k for k, v in out.loaders.items() if v.ok}
        return bool(ok) and ok <= now_ok

    def run(
        self,
        *,
        max_mutants: int | None = None,
        budget_s: float | None = None,
        start_index: int = 0,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> Stats:
        if not self.seed_ok:
            self.run_seeds()
        deadline = time.monotonic() + budget_s if budget_s is not None else None
        i = start_index
        n = len(self.seed_ids)
        while True:
            if max_mutants is not None and self.stats.mutants >= max_mutants:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            sid = self.seed_ids[i % n]
            sample, recipe = generate(sid, self.campaign_seed, i)
            i += 1
            if not recipe.steps:
                continue
            out = self.evaluate(sample, recipe)
            st = self.stats
            st.mutants += 1
            st.count(out)
            for name, _ in recipe.steps:
                st.per_mutator[name] += 1
            if out.reached:
                st.reached_mutants += 1
            if out.scan.error:
                st.scan_errors.append(out)
            if out.miss:
                st.misses.append(out)
            elif self.false_alarm(out):
                st.false_alarms.append(out)
            if not out.reached and not out.scan.error and not self.seeds[sid].malicious:
                ok = self.seed_ok.get(sid, frozenset())
                if ok and ok <= {k for k, v in out.loaders.items() if v.ok}:
                    st.clean_benign_mutants += 1
            if on_outcome is not None:
                on_outcome(out)
        return self.stats

    def still_misses(self, recipe: Recipe) -> bool:
        out = self.evaluate(replay(recipe), recipe)
        return out.miss

    def minimize(self, recipe: Recipe) -> Recipe:
        """The shortest subsequence of the recipe's steps that still gives a miss."""
        steps = recipe.steps
        for size in range(0, len(steps)):
            for mask in range(1 << len(steps)):
                if bin(mask).count("1") != size:
                    continue
                sub = [s for j, s in enumerate(steps) if mask >> j & 1]
                cand = Recipe(recipe.seed_id, recipe.campaign_seed, recipe.index, sub, recipe.name)
                try:
                    sample = replay(cand)
                except ValueError:
                    continue
                cand.name = sample.name
                if self.evaluate(sample, cand).miss:
                    return cand
        return recipe


def save_recipe(folder: Path, out: Outcome, klass: str, note: str = "") -> Path:
    """A regression file: the recipe, the bytes' digest and what each side saw."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "class": klass,
        "status": "open",
        "note": note,
        **out.summary(),
    }
    name = out.recipe.key.replace("+", "-").replace("@", "-").replace("#", "-") + ".json"
    path = folder / name
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path
