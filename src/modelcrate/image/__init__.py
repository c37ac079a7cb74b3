"""Container images without Docker: reproducible OCI layers, layouts, archives, registries.

Modules: :mod:`.tarlayer` (deterministic layers), :mod:`.oci` (media types, config, manifests,
indexes, the :class:`Image` type), :mod:`.layout` (OCI layouts and archives), :mod:`.registry`
and :mod:`.auth` (the distribution API client), then the assembly modules that build a crate's
image (:mod:`.base`, :mod:`.wheels`, :mod:`.assemble`, :mod:`.containerize`). Nothing is
imported here; the names below load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "Image": "modelcrate.image.oci",
    "ImageConfig": "modelcrate.image.oci",
    "Layer": "modelcrate.image.tarlayer",
    "LayerFile": "modelcrate.image.tarlayer",
    "RegistryClient": "modelcrate.image.registry",
    "RegistryError": "modelcrate.image.auth",
    "build_image": "modelcrate.image.oci",
    "build_layer": "modelcrate.image.tarlayer",
    "read_oci_archive": "modelcrate.image.layout",
    "read_oci_layout": "modelcrate.image.layout",
    "write_oci_archive": "modelcrate.image.layout",
    "write_oci_layout": "modelcrate.image.layout",
}

__all__ = [
    "Image",
    "ImageConfig",
    "Layer",
    "LayerFile",
    "RegistryClient",
    "RegistryError",
    "build_image",
    "build_layer",
    "read_oci_archive",
    "read_oci_layout",
    "write_oci_archive",
    "write_oci_layout",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelcrate.image' has no attribute {name!r}")
    return getattr(import_module(module), name)
