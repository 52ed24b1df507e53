"""Small real datasets that ship offline (nothing is downloaded at run time)."""
import numpy as np

__all__ = ["load_digits_split"]


def load_digits_split(seed, test_fraction=0.25):
    """scikit-learn's bundled 8x8 digits scaled to [0, 1], split with a seeded permutation.

    Returns:
      x_tr (n_tr, 64) float64, y_tr (n_tr,) int, x_te (n_te, 64), y_te (n_te,).
    Raises:
      ImportError: scikit-learn (which ships the data) is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("this needs scikit-learn, which ships the digits data offline: "
                          "pip install 'lrtdense[examples]'") from None
    data = load_digits()
    x, y = data.data / 16.0, data.target
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]
