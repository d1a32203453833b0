"""The covariance registry, the declared interface a new type implements, and the types' error
messages (each test taking ``cov`` runs over every registered type and the toy ``scalar`` type)."""

import inspect
import re
import types

import numpy as np
import pytest
from covariance_reference import SHARED_SUITE_TYPES, registered
from scalar_covariance import ScalarCovariance

from daskem.kernels.covariance import (
    COVARIANCE_TYPES,
    CovarianceType,
    FullCovariance,
    MatrixCovariance,
    VarianceCovariance,
    base,
    get_covariance_type,
    register,
)

D, K = 3, 3  # features, components
MATRIX_TYPES = [cov for cov in COVARIANCE_TYPES.values() if isinstance(cov, MatrixCovariance)]


# ----- the registry and the interface ------------------------------------------------------------


def test_a_registered_type_is_found_under_its_own_name_until_removed():
    with registered(ScalarCovariance.name) as scalar:
        assert get_covariance_type("scalar") is scalar and list(COVARIANCE_TYPES)[-1] == "scalar"
    assert "scalar" not in COVARIANCE_TYPES
    with pytest.raises(ValueError, match="unknown covariance_type 'scalar'"):
        get_covariance_type("scalar")


def test_unknown_covariance_type_error_lists_every_registered_type():
    with registered(ScalarCovariance.name):
        choices = ", ".join(f"'{name}'" for name in SHARED_SUITE_TYPES)
        with pytest.raises(ValueError, match=re.escape(f"unknown covariance_type 'fulll': choose one of {choices}")):
            get_covariance_type("fulll")


def test_register_refuses_a_taken_name_and_leaves_the_registry_as_it_was():
    before = dict(COVARIANCE_TYPES)
    message = "covariance_type 'full' is already registered by FullCovariance: give FullCovariance another name"
    with pytest.raises(ValueError, match=re.escape(message)):
        register(FullCovariance())
    with registered(ScalarCovariance.name) as scalar:
        message = "covariance_type 'scalar' is already registered by ScalarCovariance: give ScalarCovariance another"
        with pytest.raises(ValueError, match=re.escape(message)):
            register(ScalarCovariance())
        assert get_covariance_type("scalar") is scalar
    assert COVARIANCE_TYPES == before


def test_register_takes_an_instance_not_a_class():
    with pytest.raises(TypeError, match="register\\(\\) takes an instance of a CovarianceType subclass"):
        register(ScalarCovariance)
    assert ScalarCovariance.name not in COVARIANCE_TYPES


def _private_names(code: types.CodeType) -> set[str]:
    """Private attribute and global names used by ``code``, nested comprehensions included."""
    names = {name for name in code.co_names if name.startswith("_") and not name.startswith("__")}
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _private_names(constant)
    return names


def test_every_hook_the_common_methods_call_is_declared_on_the_interface():
    called = set()
    for member in vars(CovarianceType).values():
        if inspect.isfunction(member):
            called |= _private_names(member.__code__)
    hooks = called - set(vars(base))  # module-level helpers are not hooks
    declared = CovarianceType.__abstractmethods__ | set(CovarianceType.__annotations__)
    concrete = {name for name, member in vars(CovarianceType).items() if inspect.isfunction(member)} - declared
    assert {"_outer", "_cross", "_regularize", "_scale_normals", "_check_positive"} <= hooks
    assert hooks - concrete <= declared


PER_TYPE = {"covariances_shape", "n_parameters", "_pool", "_expand", "_describe"}


@pytest.mark.parametrize("kind, own", [
    (MatrixCovariance, PER_TYPE | {"weighted_products", "density_terms", "distance_parts"}),
    (VarianceCovariance, PER_TYPE),
], ids=["matrix", "variance"])
def test_a_new_type_of_each_kind_must_define_exactly_its_per_type_methods(kind, own):
    bare = type("Bare", (kind,), {"name": "bare"})
    assert bare.__abstractmethods__ == own
    with pytest.raises(TypeError, match="abstract"):
        bare()


# ----- errors --------------------------------------------------------------------------------------

COLLAPSED = [
    ("full", np.stack([np.eye(3), np.eye(3), [[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]),
     "covariance of component 2 is not positive definite (smallest eigenvalue -1; "),
    ("tied", np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
     "the tied covariance is not positive definite (smallest eigenvalue -1; "),
    ("diag", np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 0.0, 1.0]]),
     "variance of feature 1 in component 2 is not positive (it is 0; "),
    ("spherical", np.array([1.0, 1.0, -0.5]),
     "variance of component 2 is not positive (it is -0.5; "),
    ("scalar", np.array(-2.0), "the shared variance is not positive (it is -2; "),
]


@pytest.mark.parametrize("name, covariances, what", COLLAPSED, ids=[case[0] for case in COLLAPSED])
def test_not_positive_definite_error_names_the_component_and_reg_covar(name, covariances, what):
    fix = ("it has collapsed onto too few distinct rows): increase reg_covar (now 1e-06), "
           "reduce n_components, or standardize the features")
    with registered(name) as cov, pytest.raises(ValueError, match=re.escape(what + fix)):
        cov.precision_cholesky(covariances, reg_covar=1e-6)


def test_precision_cholesky_rejects_zero_and_nan_covariances(cov):
    zeros = np.zeros(cov.covariances_shape(K, D))
    fix = r"increase reg_covar \(now 0.001\), reduce n_components, or standardize the features"
    with pytest.raises(ValueError, match="not positive.*" + fix):
        cov.precision_cholesky(zeros, reg_covar=1e-3)
    with pytest.raises(ValueError, match="NaN"):
        cov.precision_cholesky(np.full_like(zeros, np.nan))


def test_check_precisions_rejects_a_wrong_shape_naming_expected_and_got(cov):
    expected = cov.covariances_shape(K, D)
    got = (2, *expected)
    message = f"precisions_init for covariance_type '{cov.name}' with 3 components and 3 features " \
              f"must have shape {expected}, got {got}"
    with pytest.raises(ValueError, match=re.escape(message)):
        cov.check_precisions(np.ones(got), K, D)


def test_check_precisions_rejects_non_positive_precisions(cov):
    with pytest.raises(ValueError, match=r"precisions_init is invalid: .*precision.* is .*(not positive|-1)"):
        cov.check_precisions(-np.ones(cov.covariances_shape(K, D)), K, D)
    with pytest.raises(ValueError, match="precisions_init contains NaN or infinity"):
        cov.check_precisions(np.full(cov.covariances_shape(K, D), np.inf), K, D)


@pytest.mark.parametrize("cov", MATRIX_TYPES, ids=[cov.name for cov in MATRIX_TYPES])
def test_check_precisions_rejects_a_non_symmetric_matrix(cov):
    matrices = np.broadcast_to(np.eye(D), (K, D, D)).copy()
    matrices[-1, 0, 1] = 0.5
    precisions = matrices[-1] if cov.covariances_shape(K, D) == (3, 3) else matrices
    with pytest.raises(ValueError, match=r"precisions_init is invalid: .*precision.* is not symmetric"):
        cov.check_precisions(precisions, K, D)


def test_check_precisions_names_the_component_that_is_not_positive_definite():
    precisions = np.stack([np.eye(3), np.diag([1.0, -2.0, 1.0]), np.eye(3)])
    message = ("precisions_init is invalid: precision of component 1 is not positive definite "
               "(smallest eigenvalue -2)")
    with pytest.raises(ValueError, match=re.escape(message)):
        get_covariance_type("full").check_precisions(precisions, 3, 3)

