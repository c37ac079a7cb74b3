"""Stable rule identifiers with a one-line description each (used by SARIF and the docs).

A rule id names a *kind* of observation; the severity is decided per finding (an import of
``os.system`` and of ``collections.OrderedDict`` are both ``pickle.global``). Scanner modules
add their ids here so the catalogue stays in one place.
"""

from __future__ import annotations

RULES: dict[str, str] = {
    # engine / generic
    "scan.error": "The scanner failed on this input; the file could not be verified",
    "scan.unreadable": "The file could not be read",
    "format.unknown": "Unrecognised format: not scanned for code, reported so nothing is silently skipped",
    "format.mismatch": "The file's content does not match its name",
    "format.polyglot": "The content is valid for several formats at once; it was analysed as each",
    "limits.exceeded": "A scan limit was reached; the rest of the input was not verified",
    "path.symlink-escape": "A symbolic link points outside the scanned tree",
    # skops artifacts (crate import and load: what skops would import, judged by the allowlist)
    "skops.type": "A type or function a skops file needs that the allowlist does not admit",
    "skops.trust-claim": "A crate's recorded skops trust list names something the allowlist does not admit",
    "skops.malformed": "A skops file's schema cannot be read, so what it imports cannot be verified",
    # pickle
    "pickle.global": "A global (module attribute) imported by a pickle",
    "pickle.call": "A call made while unpickling (REDUCE, INST, OBJ, NEWOBJ, BUILD)",
    "pickle.malformed": "The pickle stream is malformed; what ran before the error still runs in pickle.load",
    "pickle.multiple-streams": "Several pickles are concatenated; loaders that read repeatedly run them all",
    "pickle.dynamic-global": "A global whose name is computed at load time and cannot be resolved statically",
    "pickle.out-of-band-buffer": "An out-of-band buffer opcode (NEXT_BUFFER/READONLY_BUFFER)",
    "pickle.expansion": "Billion-laughs style expansion",
    "pickle.nested": "A nested pickle (pickle inside pickle) was found and scanned",
    "pickle.scanner-deactivation": "The pickle references a security scanner",
    "pickle.frame-violation": "An opcode crosses a FRAME boundary; unpicklers disagree on it",
    "pickle.extension": "EXT1/2/4: the callable comes from the loading process's registry",
    "pickle.persistent-id": "A persistent id that is not a torch storage reference",
    "pickle.attribute-injection": "BUILD/SETITEM/APPEND on a module-level object or on an object a lookup returned",
    # containers
    "archive.path-traversal": "An archive member name escapes the extraction directory",
    "archive.symlink": "An archive member is a link, possibly pointing outside the extraction directory",
    "archive.bomb": "Decompression or archive bomb (size, ratio, entries or depth)",
    "archive.malformed": "The archive structure is malformed or inconsistent",
    "archive.encrypted": "An archive member is encrypted and cannot be verified",
    "archive.unsupported": "A compression method or container that the scanner cannot open",
    "torch.torchscript": "TorchScript code: executable content run by torch.jit.load",
    "torch.legacy-tar": "Legacy tar-format PyTorch checkpoint (loaded only with weights_only=False)",
    "numpy.object-array": "An object-dtype array: its data is a pickle",
    "numpy.malformed": "The NPY header is invalid or disagrees with the data size",
    # other formats
    "keras.lambda": "A Keras Lambda layer: serialized Python code runs at load",
    "keras.module-reference": "A Keras config references a module/function outside Keras",
    "keras.unsafe-config": "A Keras config disables safe mode or calls a file/network helper",
    "keras.vocabulary-path": "A lookup layer reads a vocabulary file from a path at load",
    "keras.torch-module": "A TorchModuleWrapper layer: its weights are a torch pickle",
    "tf.dangerous-op": "A TensorFlow op that reads/writes files, runs code or touches the system",
    "tf.custom-op": "A TensorFlow op outside the standard op set",
    "tf.malformed": "The TensorFlow protobuf (SavedModel, GraphDef, keras_metadata) is malformed",
    "keras.custom-object": "A Keras config needs a registered custom object from another package",
    "keras.malformed": "A Keras config is unreadable or invalid JSON",
    "config.malformed": "A JSON/YAML config file is not valid",
    "onnx.external-data": "An ONNX external-data reference that escapes the model directory",
    "onnx.custom-domain": "ONNX nodes in a non-standard operator domain (needs an out-of-model library)",
    "onnx.malformed": "The ONNX protobuf is malformed",
    "safetensors.malformed": "The safetensors header or layout is invalid",
    "gguf.malformed": "The GGUF header, metadata or tensor table is invalid",
    "template.ssti": "A chat template reaches Python internals (server-side template injection)",
    "config.code-target": "A configuration instantiates an arbitrary callable (Hydra _target_ and similar)",
}
