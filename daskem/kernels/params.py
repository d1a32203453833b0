"""The parameters a kernel reads: frozen values, built on the client and sent to every task once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GMMParams:
    """Parameters of a Gaussian mixture; precision Cholesky factors are kept so the E-step never inverts."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray


@dataclass(frozen=True)
class KMeansParams:
    """Parameters of k-means: the centres."""

    centers: np.ndarray
