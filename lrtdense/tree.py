"""Nested dicts of arrays ("trees"): the one place they are walked, mapped and flattened.

Params, gradients, noise and optimizer moments are all trees: dicts whose values are arrays or
further dicts, e.g. ``{"network": {"layer_0": {"kernel_posterior_loc": (in, units), ...}}}``.
Keys are strings; the order of a dict's keys is the order of its leaves.

* ``structure(tree)``: the keys, with every leaf replaced by ``"*"`` (comparable, printable);
* ``leaves(tree)``: the leaves in key order;
* ``map(fn, tree, *rest)``: ``fn`` applied leaf-wise to trees of one structure;
* ``map_with_path(fn, tree)``: ``fn(path, leaf)`` at every leaf, path the "a/b/c" of ``flatten``;
* ``flatten(tree)`` / ``unflatten(flat)``: to and from a flat dict keyed by "a/b/c" paths.

A structure mismatch is a ``TypeError`` that prints both structures (as in
``jax.tree_util``), a malformed path a ``ValueError`` naming it.
"""

__all__ = ["structure", "leaves", "map", "map_with_path", "flatten", "unflatten", "SEP"]

SEP = "/"
_map = map


def structure(tree):
    """A comparable description of a tree's keys: dicts of dicts with leaves replaced by "*"."""
    if isinstance(tree, dict):
        return {k: structure(v) for k, v in tree.items()}
    return "*"


def leaves(tree):
    """The leaves of ``tree`` in key order (a list)."""
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in leaves(v)]
    return [tree]


def map(fn, tree, *rest):
    """``fn(leaf, *other_leaves)`` at every leaf of ``tree`` and of the trees in ``rest``.

    Returns a tree of ``tree``'s structure holding the results.
    Raises:
      TypeError: a tree in ``rest`` has another structure (the message prints both).
    """
    for other in rest:
        if not _same(tree, other):
            raise TypeError(f"tree structures differ: {structure(tree)} vs {structure(other)}")
    return _apply(fn, tree, rest)


def map_with_path(fn, tree, prefix=""):
    """``fn(path, leaf)`` at every leaf of ``tree``, path as ``flatten`` writes it ("a/b/c",
    after ``prefix``). Returns a tree of ``tree``'s structure (empty dicts kept)."""
    if isinstance(tree, dict):
        return {k: map_with_path(fn, v, f"{prefix}{k}{SEP}") for k, v in tree.items()}
    return fn(prefix[:-len(SEP)] if prefix else prefix, tree)


def _same(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return not isinstance(b, dict)


def _apply(fn, tree, rest):
    # the structures were checked once, at the top
    if isinstance(tree, dict):
        return {k: _apply(fn, v, tuple(o[k] for o in rest)) for k, v in tree.items()}
    return fn(tree, *rest)


def flatten(tree, prefix=""):
    """A tree as a flat dict {"a/b/c": leaf}, in leaf order.

    Args:
      tree: a nested dict with string keys.
      prefix: prepended to every path (e.g. "params/").
    Raises:
      ValueError: a key is not a non-empty string, or contains "/".
    """
    out = {}
    for key, value in tree.items():
        if not isinstance(key, str) or not key or SEP in key:
            raise ValueError(f"tree key {key!r} under {prefix or 'the root'!r} must be a "
                             f"non-empty string without {SEP!r}")
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}{SEP}"))
        else:
            out[prefix + key] = value
    return out


def unflatten(flat, prefix=None):
    """The inverse of ``flatten``: {"a/b": x, "a/c": y} -> {"a": {"b": x, "c": y}}.

    With ``prefix`` (e.g. "params"), only the paths under "params/" are read, the prefix removed.

    Raises:
      ValueError: a path is empty or has an empty part ("a//b"), or one path is a prefix of
        another ("a" and "a/b": a leaf cannot also be a dict).
    """
    if prefix is not None:
        head = prefix + SEP
        flat = {k[len(head):]: v for k, v in flat.items() if k.startswith(head)}
    tree = {}
    for path, value in flat.items():
        parts = path.split(SEP) if isinstance(path, str) else [""]
        if not all(parts):
            raise ValueError(f"malformed path {path!r}: expected names separated by {SEP!r}")
        node = tree
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"paths {SEP.join(parts[:i + 1])!r} and {path!r} conflict: "
                                 f"a leaf cannot also hold other entries")
            node = child
        if parts[-1] in node:
            raise ValueError(f"paths conflict at {path!r}: a leaf cannot also hold other entries")
        node[parts[-1]] = value
    return tree
