"""daskem: k-means and Gaussian mixtures fitted by EM over the chunks of a Dask array.

Each E-step maps a pure NumPy kernel over row chunks to sufficient statistics, which are
tree-reduced on the cluster; the M-step runs on the client. Data is read once per iteration and
never gathered.
"""

from importlib import import_module

__version__ = "0.1.0"

# Public names and the modules that define them, imported on first use so that the command line
# answers (and fails on bad input) without paying for scikit-learn's import.
_EXPORTS = {
    "GaussianMixture": "daskem.models.gaussian_mixture",
    "KMeans": "daskem.models.kmeans",
    "fit_candidates": "daskem.models.selection",
    "load_model": "daskem.outputs.model_files",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'daskem' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
