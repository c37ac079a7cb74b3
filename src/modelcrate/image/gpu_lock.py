"""The GPU variant of a crate's lock: ``onnxruntime`` swapped for ``onnxruntime-gpu``.

Everything else in the lock stays byte for byte as the crate pinned it. The GPU package is
resolved by uv with the crate's other pins as constraints, so its dependencies keep the crate's
versions; its hashes come from the index like every other pin (pip still installs with
``--require-hashes``). ``onnxruntime-gpu`` is published later than, and sometimes not at all
for, a CPU release: the newest GPU release not newer than the crate's ``onnxruntime`` is taken,
and the change is reported.

Resolution needs the package index once; the result is cached under the request's digest in
``cache_dir`` (the store's lock cache), so the same crate gives the same GPU lock offline.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from modelcrate.crate.locked import LockedPackage, parse_lock
from modelcrate.errors import InputError

__all__ = ["CPU_PACKAGE", "GPU_PACKAGE", "GpuLock", "gpu_lock"]

CPU_PACKAGE: Final = "onnxruntime"
GPU_PACKAGE: Final = "onnxruntime-gpu"


@dataclass(frozen=True)
class GpuLock:
    """The GPU lock's bytes and what changed from the crate's lock, in words."""

    data: bytes
    changes: tuple[str, ...]
    cached: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def gpu_lock(lock: bytes, *, python: str, cache_dir: Path | None) -> GpuLock:
    """The crate's ``lock`` with the ONNX Runtime CPU package replaced by the GPU one."""
    from modelcrate._fs import atomic_write_bytes
    from modelcrate.crate.lockfile import LockRequest, resolve_lock

    try:
        packages = parse_lock(lock)
    except ValueError as exc:
        raise InputError(
            f"the crate's requirements.lock cannot be read: {exc}",
            path="requirements.lock",
            hint="rebuild the crate: its lock pins every package as NAME==VERSION with hashes",
        ) from exc
    cpu = next((p for p in packages if p.key == CPU_PACKAGE), None)
    if cpu is None:
        raise InputError(
            f"the crate's requirements.lock has no {CPU_PACKAGE}: the GPU variant swaps it for "
            f"{GPU_PACKAGE}",
            path="requirements.lock",
            hint="build the GPU image from an ONNX crate (runtime onnxruntime), or leave out --gpu",
        )
    kept = [p for p in packages if p.key != CPU_PACKAGE]
    request = LockRequest(
        requirements=(f"{GPU_PACKAGE}<={cpu.version}",),
        constraints=tuple(sorted(f"{p.key}=={p.version}" for p in kept)),
        python=python,
    )
    resolved = resolve_lock(request, cache_dir=cache_dir)
    if cache_dir is not None and not resolved.cached:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_dir / f"{resolved.key}.lock", resolved.data)
    closure = {p.key: p for p in parse_lock(resolved.data)}
    gpu = closure.get(GPU_PACKAGE)
    if gpu is None:  # pragma: no cover (uv resolved it)
        raise InputError(f"the GPU lock does not pin {GPU_PACKAGE}", path="requirements.lock")
    _check_pins(closure, kept)
    dropped = _only_for_cpu(kept, closure)
    kept_keys = {p.key for p in kept}
    blocks = [_relinked(p, closure) for p in kept if p.key not in dropped]
    added = [p for key, p in closure.items() if key not in kept_keys]
    changes = [_swap_words(cpu, gpu)]
    changes += [
        f"removed {p.key}=={p.version} (only {CPU_PACKAGE} needed it)"
        for p in kept
        if p.key in dropped
    ]
    changes += [
        f"added {p.key}=={p.version} (a dependency of {GPU_PACKAGE})"
        for p in added
        if p.key != GPU_PACKAGE
    ]
    header = (
        f"# requirements.lock of the GPU image: the crate's lock (sha256 "
        f"{hashlib.sha256(lock).hexdigest()})\n"
        f"# with {CPU_PACKAGE}=={cpu.version} replaced by {GPU_PACKAGE}=={gpu.version}.\n"
        "# Install: pip install --require-hashes --no-deps -r requirements.lock\n"
    )
    data = header + "".join(p.text for p in sorted([*blocks, *added], key=lambda p: p.key))
    return GpuLock(data=data.encode(), changes=tuple(changes), cached=resolved.cached)


def _check_pins(closure: dict[str, LockedPackage], kept: list[LockedPackage]) -> None:
    for p in kept:
        other = closure.get(p.key)
        if other is not None and other.version != p.version:  # pragma: no cover (constrained)
            raise InputError(
                f"{GPU_PACKAGE} needs {p.key}=={other.version}, the crate pins {p.version}",
                path="requirements.lock",
                hint="rebuild the crate with versions the GPU runtime supports",
            )


def _only_for_cpu(kept: list[LockedPackage], closure: dict[str, LockedPackage]) -> set[str]:
    """Packages that only the CPU runtime (directly or through each other) needed."""
    dropped = {CPU_PACKAGE}
    changed = True
    while changed:
        changed = False
        for p in kept:
            if p.key in dropped or p.direct or p.key in closure or not p.required_by:
                continue
            if set(p.required_by) <= dropped:
                dropped.add(p.key)
                changed = True
    return dropped - {CPU_PACKAGE}


def _relinked(p: LockedPackage, closure: dict[str, LockedPackage]) -> LockedPackage:
    """``p`` with its ``# via`` comment naming the GPU package instead of the CPU one."""
    if CPU_PACKAGE not in p.required_by:
        return p
    parents = set(p.required_by) - {CPU_PACKAGE}
    if p.key in closure:
        parents |= set(closure[p.key].required_by)
    names = (["-r requirements.in"] if p.direct else []) + sorted(parents)
    if len(names) == 1:
        via = f"    # via {names[0]}\n"
    else:
        via = "    # via\n" + "".join(f"    #   {n}\n" for n in names)
    return replace(p, required_by=tuple(sorted(parents)), text=p.pin + (via if names else ""))


def _swap_words(cpu: LockedPackage, gpu: LockedPackage) -> str:
    words = f"{CPU_PACKAGE}=={cpu.version} -> {GPU_PACKAGE}=={gpu.version}"
    if gpu.version != cpu.version:
        words += f" ({GPU_PACKAGE} {cpu.version} is not published: using the newest older release)"
    return words
