"""Policy-gradient objectives, each declared once by its per-token gradient coefficient (DESIGN section 10).

An objective's per-sample gradient is ``(1/nu) sum_t w_t grad log pi_theta(y_t|c_t)``; the
coefficient ``w_t`` is declared with :class:`TokenCoefficient` or :class:`SequenceCoefficient`
(:func:`define`), and engine-mismatch corrections (:data:`tis`, :data:`mis`) compose with any
objective through ``correction=``. :func:`gradient` computes the batch gradient from Rollouts;
``tokis.exact.objective_gradient`` its exact expectation.
"""

from ._builtins import cispo, gspo, mis, ppo_clip, seq, tis, tok
from ._coefficients import Correction, SequenceCoefficient, TokenCoefficient
from ._define import (
    ADVANTAGES,
    AGGREGATIONS,
    CORRECTIONS,
    REGISTRY,
    ObjectiveSpec,
    Settings,
    define,
    get_correction,
    get_objective,
    register,
    register_correction,
)
from ._sampled import coefficients, gradient

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "CORRECTIONS",
    "Correction",
    "ObjectiveSpec",
    "REGISTRY",
    "SequenceCoefficient",
    "Settings",
    "TokenCoefficient",
    "cispo",
    "coefficients",
    "define",
    "get_correction",
    "get_objective",
    "gradient",
    "gspo",
    "mis",
    "ppo_clip",
    "register",
    "register_correction",
    "seq",
    "tis",
    "tok",
]
