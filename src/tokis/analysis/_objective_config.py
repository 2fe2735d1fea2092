"""Objective configurations of the analysis commands: an objective by name with its parameters and settings.

:func:`parse_objective` reads ``"ppo_clip:eps_high=0.28,aggregation=seq_mean"``-style strings
(or ``(name, params)`` pairs) into :class:`ObjectiveConfig`, which carries the fingerprint of
the declaration the results store keys cells by (:mod:`tokis.analysis._gradient`,
:mod:`tokis.analysis._train`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..objectives import REGISTRY as OBJECTIVES
from ..objectives import get_correction, get_objective
from ._config import canonical_json
from ._estimator_config import config_label, parse_value, split_items

__all__ = ["ObjectiveConfig", "parse_objective", "parse_objectives"]


#: Settings every objective takes (tokis.objectives.ObjectiveSpec.settings).
_SHARED = ("aggregation", "advantage", "baseline", "normalize_std", "correction", "correction_level")


@dataclass(frozen=True)
class ObjectiveConfig:
    """An objective with its settings: one row per point of a gradient sweep.

    Attributes
    ----------
    name : str
        Name in :data:`tokis.objectives.REGISTRY`.
    given : tuple of (str, value)
        The parameters and settings given (sorted), passed to ``exact.objective_gradient``.
    settings : str
        Canonical JSON of every validated setting, defaults filled in (what the store key hashes).
    """

    name: str
    given: tuple = ()
    settings: str = ""

    @property
    def kwargs(self) -> dict:
        """The given parameters as keyword arguments."""
        return dict(self.given)

    @property
    def label(self) -> str:
        """``name`` or ``name(k=v,...)`` with the given parameters: the table's row name."""
        return config_label(self.name, self.given)

    def resolve(self):
        """The registered :class:`tokis.objectives.ObjectiveSpec`."""
        return get_objective(self.name)

    def fingerprint(self) -> str:
        """SHA-256 of the declaration: coefficient and correction source, parameters' defaults."""
        spec = self.resolve()
        coef = spec.coefficient
        parts = [type(coef).__name__, canonical_json(dict(spec.defaults))]
        for f in dataclasses.fields(coef):  # the coefficient's functions by source, its flags by value
            v = getattr(coef, f.name)
            parts.append(f"{f.name}={_source(v) if callable(v) else repr(v)}")
        corr = self.kwargs.get("correction")
        if corr is not None:
            parts.append(_source(get_correction(corr).factor))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _source(fn) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"


def _settings_json(st) -> str:
    return canonical_json(dict(params=dict(st.params), aggregation=st.aggregation, advantage=st.advantage,
                               baseline=st.baseline, normalize_std=st.normalize_std,
                               correction=None if st.correction is None else st.correction.name,
                               correction_level=st.correction_level, correction_params=dict(st.correction_params)))


def _make_objective(name, params: Mapping) -> ObjectiveConfig:
    if not isinstance(name, str):
        raise TypeError(f"objective name must be a string, got {type(name).__name__}")
    name = name.strip()
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose from {', '.join(OBJECTIVES)}")
    spec = OBJECTIVES[name]
    given = {}
    for k, v in params.items():
        if not isinstance(k, str):
            raise TypeError(f"objective parameter names must be strings, got {k!r}")
        if isinstance(v, str):
            v = parse_value(v)
        elif isinstance(v, (bool, np.bool_)):
            v = bool(v)
        elif isinstance(v, (int, float, np.integer, np.floating)):
            v = float(v)
        elif v is not None:
            raise TypeError(f"objective parameter values must be numbers, strings, booleans or None, got "
                            f"{type(v).__name__} for {k!r}")
        given[k] = v
    corr = given.get("correction")
    accepted = [*spec.defaults, *_SHARED, *(get_correction(corr).defaults if corr is not None else ())]
    unknown = [k for k in given if k not in accepted]
    if unknown:
        raise ValueError(f"objective {name!r} has no parameter {unknown[0]!r} (accepted: {', '.join(accepted)}; "
                         "correction=tis adds c, correction=mis adds lo and hi)")
    try:
        st = spec.settings(**given)
    except (TypeError, ValueError) as err:  # a value of the wrong type or out of range: one message, one type
        raise ValueError(f"objective {name!r}: {err}") from None
    return ObjectiveConfig(name, tuple(sorted(given.items())), _settings_json(st))


def parse_objective(spec) -> ObjectiveConfig:
    """Parse one objective specification.

    Parameters
    ----------
    spec : str, (name, params) pair or ObjectiveConfig
        ``"name"`` or ``"name:key=value,key=value"``, e.g. ``"ppo_clip:eps_high=0.28"``,
        ``"tok:aggregation=token_mean"``, ``"tok:correction=tis,c=2"``: the objective's own
        parameters (``eps_low``, ``eps_high``, ``dual_clip``) and the shared settings
        (``aggregation``, ``advantage``, ``baseline``, ``normalize_std``, ``correction``,
        ``correction_level`` and the correction's ``c``/``lo``/``hi``). Values are numbers where
        possible, ``none``, ``true``/``false``, or text.

    Returns
    -------
    ObjectiveConfig

    Raises
    ------
    ValueError
        Unknown objective or parameter, a value out of range, malformed text.
    TypeError
        Wrong type.
    """
    if isinstance(spec, ObjectiveConfig):
        return _make_objective(spec.name, spec.kwargs)
    if isinstance(spec, str):
        text = spec.strip()
        if not text:
            raise ValueError("empty objective specification")
        name, _, rest = text.partition(":")
        params = {}
        if rest.strip():
            for item in rest.split(","):
                key, eq, val = item.partition("=")
                if not eq or not key.strip():
                    raise ValueError(f"malformed objective parameter {item!r} in {spec!r} (expected key=value)")
                params[key.strip()] = parse_value(val)
        return _make_objective(name, params)
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        name, params = spec
        params = {} if params is None else params
        if not isinstance(params, Mapping):
            raise TypeError(f"objective parameters must be a dict, got {type(params).__name__}")
        return _make_objective(name, dict(params))
    raise TypeError(f"objective must be a name, 'name:k=v' string or (name, params) pair, got {spec!r}")


def parse_objectives(specs) -> list[ObjectiveConfig]:
    """Parse a list of objective specifications (or one comma-separated string).

    As for estimators, a piece ``key=value`` without a name continues the parameters of the
    previous objective: ``"tok,ppo_clip:eps_low=0.2,eps_high=0.28,cispo"`` is ``tok``,
    ``ppo_clip(eps_high=0.28, eps_low=0.2)``, ``cispo``. Objectives with the same validated
    settings are kept once (the first label).

    Raises
    ------
    ValueError
        Empty list, unknown objective or parameter.
    """
    if isinstance(specs, (str, ObjectiveConfig)):
        specs = [specs]
    if isinstance(specs, tuple) and len(specs) == 2 and isinstance(specs[1], Mapping):
        specs = [specs]
    items = split_items(specs, "objective")
    out, seen = [], set()
    for item in items:
        cfg = parse_objective(item)
        key = (cfg.name, cfg.settings)
        if key not in seen:
            seen.add(key)
            out.append(cfg)
    if not out:
        raise ValueError("no objective given")
    return out


