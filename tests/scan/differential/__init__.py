"""Differential fuzzing: does the scanner read what the loaders read?

Seeds (:mod:`.seeds`) are written at run start by the real libraries: ``pickle.dumps`` at every
protocol (plain objects, NumPy arrays, a torch tensor), ``torch.save`` (zip and legacy; the
pre-1.6 tar checkpoint is built by hand as ``legacy_load`` reads it), ``joblib.dump`` with every
compression (float, Fortran-ordered int and object arrays), joblib's old ``ZF`` file (built by
hand), ``np.save``/``np.savez``/``np.savez_compressed`` (object arrays included) and pandas'
pickle in every compression ``read_pickle`` infers from a suffix (zstd only when zstandard is
installed, which it is not here). Each benign seed has a malicious twin with a harmless
non-allowlisted call (``os.getcwd``, ``posixpath.join``, ``builtins.len``, ``time.monotonic``,
``builtins.print``, ``os.system("true")``) injected at opcode level.

A seed is a tree of layers (:mod:`.structure`); mutators change one layer and the tree
re-renders: opcode level (:mod:`.mutators`: neutral inserts, probe-breaking prefixes, other
argument encodings such as ``I010``, memo renumbering, frames, STOP placement, protocol byte,
payload injection) and container level (:mod:`.container_mutators`: zip member and directory
fields, a second central directory, tar formats and headers, concatenated compression streams,
trailing data, joblib's wrapper fields and padding, NPY header fields, file names, data around
the file).

The loaders (:mod:`.loader_server`, driven by :mod:`.runner`): ``pickle.load``,
``pickle._Unpickler``, ``torch.load(weights_only=False)``, ``joblib.load``,
``numpy.load(allow_pickle=True)`` (every ``.npz`` member read) and ``pandas.read_pickle``, each
in a fresh fork of a server that imported them once, with resource limits, a private working
directory, no network (a new network namespace) and a PEP 578 audit hook that records every
``pickle.find_class`` and refuses process, socket and native-library events.

The oracle (:mod:`.oracle`) compares that with ``scan_file``; :mod:`.campaign` generates
mutants reproducibly from (seed id, campaign seed, index) and records each as a recipe of
(mutator, step seed) pairs; :mod:`.regressions` loads the saved misses from
``tests/scan/regressions/``; :mod:`.classes` guesses which class of issue 10 a miss is.

What it cannot see: a call whose global is allowlisted but whose arguments make it act (numpy's
ufunc reconstructor and ``_codecs.encode`` are taken as allowlisted; what they then import or
call is seen only as far as it raises audit events), loaders not listed above (``torch.load``
with ``mmap=True``, ``joblib.load(mmap_mode=...)``, TorchScript, Keras), and formats with no
seed here.
"""
