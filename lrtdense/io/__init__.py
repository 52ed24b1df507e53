"""Saving and loading a model (and, optionally, training state beside it) as plain files.

A model folder written by ``save(path, model, params, state=..., meta=...)`` holds:

* ``config.json``: ``{"format", "version", "model": model.get_config(), "input_dim",
  "params": {key: {"shape", "dtype"}}, "files": {name: {"size", "sha256"}}}``, plus
  ``"state": {"structure", "arrays"}`` when a state was saved and ``"meta"`` (any plain JSON the
  caller passed, e.g. an optimizer's step count, ``rng.bit_generator.state``, the epoch, the
  history);
* ``params.npz``: one uncompressed ``.npy`` member per param, keyed by its path in the params
  tree (``network/layer_0/kernel_posterior_loc``), written in C order without pickling;
* ``state.npz``: the arrays of ``state`` (a nested dict, e.g. Adam's moments), the same way.

One save is one unit. ``config.json`` records the size and sha256 of the other files, and ``load``
checks them: a folder whose files come from two saves (copied in from another run, or read while
another process replaced the folder) never loads as a model. ``load`` opens the folder once and
its files relative to it, so a reader racing a writer sees one save or the next, and retries when
the folder it opened was replaced and removed under it.

Saving is atomic: everything is written into a temporary sibling folder ``.NAME.saving-XXXX``
(locked while it is written), each file and the folder are fsynced, and only then does the folder
take the place of ``path`` (one ``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere two renames,
the previous folder set aside as ``.NAME.saving-XXXX-previous`` in between, which the next
``save`` or ``load`` puts back if a crash left no folder at ``path``). Any failure before the
commit (a full disk, a file-size limit, an exception, Ctrl-C) removes the temporary folder and
leaves the previous model untouched; the temporary folders of killed saves are removed by the next
save of the same path once no process holds their lock.

``save`` never deletes what it did not write: it replaces only an empty folder or a folder it can
prove is an lrtdense model (its ``config.json`` parses as one, every other entry is one of the
model's regular files, of the size and digest the config records). Anything else is refused with
a message naming the entry.

Loading is bounded by the files on disk and never executes code (JSON and ``.npy`` headers only,
no pickle). The expected key, shape and dtype of every param are computed from the config (the
layers' ``param_shapes``, walking ``model.network.layers``; nothing is initialized); the state's
are read from the config. Before anything is allocated, ``load`` checks that the zip directory
names exactly the expected members, stored uncompressed, whose declared sizes match the expected
shapes and fit in the file; it then reads each member's ``.npy`` header and refuses a shape,
dtype or memory order that differs. Peak memory is the size of the arrays, plus a zip directory
bounded by the number of expected members, one 1 MB buffer and the parsed config (at most
``MAX_CONFIG_BYTES`` = 4 MB of JSON, which parses to at most ~100 MB of Python objects). Every
malformed file is a ``ValueError`` naming the file and what is wrong.

The package by concern: ``saving`` (``save``, ``check_save_target``), ``loading`` (``load``,
``read_meta``), ``layout`` (the config, the params and state it lays out, sizes and digests, what
counts as a model folder), ``folders`` (temporary folders, locks, stale removal, recovery, the
swap), ``npz`` (the arrays' files), ``jsonvalues`` (plain JSON checks).
"""
from lrtdense.io.folders import STALE_SECONDS
from lrtdense.io.jsonvalues import MAX_JSON_DEPTH
from lrtdense.io.layout import FILES, FORMAT, MAX_CONFIG_BYTES, VERSION
from lrtdense.io.loading import load, read_meta
from lrtdense.io.saving import check_save_target, save

__all__ = ["save", "load", "read_meta", "check_save_target", "FORMAT", "VERSION", "FILES",
           "MAX_CONFIG_BYTES", "MAX_JSON_DEPTH", "STALE_SECONDS"]
