"""Reading a port's results for one reference case, in bounded memory (see ``store``).

Bounds, so that hostile results cannot make ``verify`` run out of memory or time:

* a port's result for a quantity at most 8 bytes per expected element plus ``RESULT_SLACK``
  (a wrong shape within that is still read, and reported by the comparison); a statistical
  sample array at most ``MAX_DRAWS`` draws of 8 bytes per element;
* an ``.npz`` of results: only the members verify needs are read, from a zip directory of at
  most ``lrtdense.bounded_npz.MAX_NPZ_DIRECTORY`` bytes.
"""
import math
import os

from lrtdense import bounded, bounded_npz
from lrtdense.reference import store

__all__ = ["ResultsError", "RESULT_SLACK", "MAX_DRAWS", "result_bounds", "load_results"]

RESULT_SLACK = 64 << 10           # beyond 8 bytes per expected element, for a wrong shape
MAX_DRAWS = 10 ** 6               # statistical samples (the mode needs 10000)


class ResultsError(ValueError):
    """A port's results for one case cannot be read (reported as a failing row, not raised)."""


def result_bounds(expected, sample_shapes=None):
    """{key: the most bytes of the port's array read}: 8 bytes per expected element plus
    ``RESULT_SLACK`` (float64 and int64 are the widest dtypes compared), and for the statistical
    samples (``sample_shapes``: {key: shape of one draw}) ``MAX_DRAWS`` such draws."""
    bounds = {key: 8 * array.size + RESULT_SLACK for key, array in expected.items()}
    for key, shape in (sample_shapes or {}).items():
        bounds[key] = 8 * MAX_DRAWS * math.prod(shape) + RESULT_SLACK
    return bounds


def load_results(results_root, name, bounds):
    """A port's results for case ``name``: ``RESULTS/name.npz`` (keys like "outputs/sample") or the
    directory layout ``RESULTS/name/<key>.npy``. Returns dict key -> array for the keys found.

    Args:
      results_root: the results folder.
      name: the case.
      bounds: {key: most bytes read} (``result_bounds``); only these keys are read.
    Raises:
      ResultsError: both layouts exist (one of them is stale), or a file is not a plain
        numeric .npz / .npy, or an array is larger than its bound (one line naming the file).
    """
    npz = os.path.join(results_root, name + ".npz")
    case_dir = os.path.join(results_root, name)
    if os.path.isfile(npz) and os.path.isdir(case_dir):
        raise ResultsError(f"both {name}.npz and {name}/ exist in {results_root}: one of them is "
                           f"stale; remove it")
    out = {}
    try:
        if os.path.isfile(npz):
            largest = max(bounds.values(), default=0)
            with bounded_npz.open_npz_members(npz, list(bounds), largest) as members:
                for key in members.names:
                    out[key] = members.read(key, bounds[key])
            return out
        for key, limit in bounds.items():
            path = store.key_path(case_dir, key)
            if os.path.isfile(path):
                out[key] = bounded.read_npy(path, None, limit)
    except bounded.FileRefused as err:
        raise ResultsError(str(err)) from None
    except OSError as err:
        raise ResultsError(f"{err.filename or npz}: unreadable ({err.strerror or err})") from None
    return out
