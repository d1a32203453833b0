"""Covariance types as objects: one small class per type, found through ``COVARIANCE_TYPES``.

Nothing outside this package branches on a type's name: code asks the registry for the type and
calls its methods (see ``CovarianceType``). Pure NumPy + SciPy, float64.

A new type is one module here with one class, a subclass of ``MatrixCovariance`` or
``VarianceCovariance`` that defines the per-type methods of ``CovarianceType``, plus two lines
below: its import and ``register(NewCovariance())``.
"""

from daskem.kernels.covariance.base import CovarianceType
from daskem.kernels.covariance.matrix import (
    FullCovariance,
    MatrixCovariance,
    TiedCovariance,
)
from daskem.kernels.covariance.variance import (
    DiagCovariance,
    SphericalCovariance,
    VarianceCovariance,
)
from daskem.kernels.tiles import CentredRows

COVARIANCE_TYPES: dict[str, CovarianceType] = {}


def register(covariance_type: CovarianceType) -> CovarianceType:
    """Make ``covariance_type`` (an instance) available under its ``name``; a taken name is refused."""
    if not isinstance(covariance_type, CovarianceType):
        raise TypeError(f"register() takes an instance of a CovarianceType subclass, got {covariance_type!r}")
    name = covariance_type.name
    if name in COVARIANCE_TYPES:
        taken_by = type(COVARIANCE_TYPES[name]).__name__
        raise ValueError(
            f"covariance_type {name!r} is already registered by {taken_by}: give "
            f"{type(covariance_type).__name__} another name"
        )
    COVARIANCE_TYPES[name] = covariance_type
    return covariance_type


register(FullCovariance())
register(TiedCovariance())
register(DiagCovariance())
register(SphericalCovariance())


def get_covariance_type(name: str) -> CovarianceType:
    """The registered covariance type called ``name``; a ValueError lists the choices otherwise."""
    try:
        return COVARIANCE_TYPES[name]
    except (KeyError, TypeError):
        choices = ", ".join(repr(choice) for choice in COVARIANCE_TYPES)
        raise ValueError(f"unknown covariance_type {name!r}: choose one of {choices}") from None


__all__ = [
    "COVARIANCE_TYPES", "CentredRows", "CovarianceType", "DiagCovariance", "FullCovariance", "MatrixCovariance",
    "SphericalCovariance", "TiedCovariance", "VarianceCovariance", "get_covariance_type", "register",
]
