"""Covariance types as objects: one small class per type, found through ``COVARIANCE_TYPES``.

Nothing outside this package branches on a type's name: code asks the registry for the type and
calls its methods (see ``CovarianceType``). Pure NumPy + SciPy, float64.
"""

from daskem.kernels.covariance.base import CovarianceType
from daskem.kernels.covariance.matrix import FullCovariance, TiedCovariance
from daskem.kernels.covariance.variance import DiagCovariance, SphericalCovariance
from daskem.kernels.tiles import CentredRows

COVARIANCE_TYPES: dict[str, CovarianceType] = {
    covariance.name: covariance
    for covariance in (FullCovariance(), TiedCovariance(), DiagCovariance(), SphericalCovariance())
}


def get_covariance_type(name: str) -> CovarianceType:
    """The registered covariance type called ``name``; a ValueError lists the choices otherwise."""
    try:
        return COVARIANCE_TYPES[name]
    except (KeyError, TypeError):
        choices = ", ".join(repr(choice) for choice in COVARIANCE_TYPES)
        raise ValueError(f"unknown covariance_type {name!r}: choose one of {choices}") from None


__all__ = [
    "COVARIANCE_TYPES", "CentredRows", "CovarianceType", "DiagCovariance", "FullCovariance",
    "SphericalCovariance", "TiedCovariance", "get_covariance_type",
]
