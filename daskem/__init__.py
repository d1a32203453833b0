"""daskem: k-means and Gaussian mixtures fitted by EM over the chunks of a Dask array.

Each E-step maps a pure NumPy kernel over row chunks to sufficient statistics, which are
tree-reduced on the cluster; the M-step runs on the client. Data is read once per iteration and
never gathered.
"""

from daskem.gmm import GaussianMixture
from daskem.kmeans import KMeans

__version__ = "0.1.0"

__all__ = ["GaussianMixture", "KMeans", "__version__"]
