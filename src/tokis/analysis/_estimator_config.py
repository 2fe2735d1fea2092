r"""Estimator configurations of the analysis: a registered (or user-declared) estimator with its parameters.

Parsed from strings such as ``"clip_tok:c=2"``, ``"mask_tok:lo=0.5,hi=2"`` or a user's declaration
``"my_module:my_spec:eps=0.1"`` (``module:attribute``, the working directory first on the path).
"""

from __future__ import annotations

import importlib
import numbers
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..estimators import REGISTRY, get_estimator, register
from ..estimators import EstimatorSpec as DeclaredSpec

__all__ = ["EstimatorConfig", "config_label", "load_declaration", "parse_estimator", "parse_estimators", "parse_value",
           "split_items"]


# ---------------------------------------------------------------------------------------------
# estimator specifications
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EstimatorConfig:
    """An estimator with its (complete, default-filled) parameters: one column of a sweep.

    Attributes
    ----------
    name : str
        Registry name (``seq``, ``tok``, ``clip_tok``, ... or a user's registered declaration).
    params : tuple of (str, value)
        Sorted parameter items, defaults of the declaration filled in.
    origin : str
        ``"module:attribute"`` of a user's declaration loaded from the command line (``""`` for
        the built-ins); worker processes import it from there.
    """

    name: str
    params: tuple = ()
    origin: str = ""

    @property
    def kwargs(self) -> dict:
        """The parameters as a dict (keyword arguments of the estimator)."""
        return dict(self.params)

    @property
    def label(self) -> str:
        """``name`` or ``name(k=v,...)`` -- unique per specification, used as the table's row name."""
        return config_label(self.name, self.params)

    def resolve(self):
        """The :class:`tokis.estimators.EstimatorSpec` this configuration runs (imports ``origin`` if needed)."""
        if self.origin and self.name not in REGISTRY:
            load_declaration(self.origin)
        return get_estimator(self.name)

    def fingerprint(self) -> str:
        """SHA-256 of the declaration (see ``tokis.estimators.EstimatorSpec.fingerprint``)."""
        return self.resolve().fingerprint


def config_label(name: str, items) -> str:
    """``name``, or ``name(k=v,...)`` with floats as ``%g``: the table's row name of a configuration."""
    if not items:
        return name
    return f"{name}({','.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in items)})"


def load_declaration(origin: str):
    """Import ``"module:attribute"`` (the working directory first on the path) and register it.

    Returns
    -------
    tokis.estimators.EstimatorSpec

    Raises
    ------
    ValueError
        The module cannot be imported, has no such attribute, or it is not an EstimatorSpec.
    """
    module, _, attr = origin.partition(":")
    if not module or not attr.isidentifier():
        raise ValueError(f"a user estimator is given as module:attribute, got {origin!r}")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module!r} for estimator {origin!r}: {exc}") from exc
    finally:
        if added:
            sys.path.remove(cwd)
    spec = getattr(mod, attr, None)
    if not isinstance(spec, DeclaredSpec):
        raise ValueError(f"{origin!r} must name an estimator made by tokis.estimators.define, got {spec!r}")
    if REGISTRY.get(spec.name) is not spec:
        register(spec)
    return spec


def parse_value(text: str, default=None):
    """A parameter value from text: ``none``, ``true``/``false``, a number (int when ``default`` is one), or the text."""
    t = text.strip()
    low = t.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        v = float(t)
    except ValueError:
        return t
    if isinstance(default, (int, np.integer)) and not isinstance(default, bool) and v.is_integer():
        return int(v)
    return v


def _normalise_value(v, default=None):
    if isinstance(v, str):
        return parse_value(v, default)
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (numbers.Integral, np.integer)):
        if isinstance(default, (int, np.integer)) and not isinstance(default, bool):
            return int(v)
        return float(v)
    if isinstance(v, (numbers.Real, np.floating)):
        return float(v)
    if v is None:
        return None
    raise TypeError(f"estimator parameter values must be numbers or strings, got {type(v).__name__}")


def _make_spec(name, params: dict, origin: str = "") -> EstimatorConfig:
    if not isinstance(name, str):
        raise TypeError(f"estimator name must be a string, got {type(name).__name__}")
    name = name.strip()
    if origin:
        name = load_declaration(origin).name
    if name not in REGISTRY:
        raise ValueError(f"unknown estimator {name!r}; choose from {', '.join(sorted(REGISTRY))} "
                         "(or module:attribute of your own declaration)")
    declared = REGISTRY[name]
    defaults = dict(declared.params)
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        accepted = ", ".join(sorted(defaults)) or "none"
        raise ValueError(f"estimator {name!r} has no parameter {unknown[0]!r} (accepted: {accepted})")
    full = {k: _normalise_value(v, v) for k, v in defaults.items()}
    for k, v in params.items():
        full[k] = _normalise_value(v, defaults.get(k))
    declared.check_params(full)  # the estimator's own check: bad values fail before any sampling
    return EstimatorConfig(name, tuple(sorted(full.items())), origin)


def parse_estimator(spec) -> EstimatorConfig:
    """Parse one estimator specification.

    Parameters
    ----------
    spec : str, (name, params) pair or EstimatorConfig
        ``"name"`` or ``"name:key=value,key=value"`` (values parsed as numbers where possible,
        e.g. ``"clip_tok:c=2"``, ``"trunc_seq:c=ionides"``, ``"mask_tok:lo=0.5,hi=2"``), or
        ``(name, {"c": 2})``.

    Returns
    -------
    EstimatorConfig
        With the registry's default parameters filled in.

    Raises
    ------
    ValueError
        Unknown estimator, unknown parameter or malformed text.
    TypeError
        Wrong type.
    """
    if isinstance(spec, EstimatorConfig):
        return _make_spec(spec.name, spec.kwargs, spec.origin)
    if isinstance(spec, DeclaredSpec):
        if REGISTRY.get(spec.name) is not spec:
            register(spec)
        return _make_spec(spec.name, {})
    if isinstance(spec, str):
        text = spec.strip()
        if not text:
            raise ValueError("empty estimator specification")
        name, _, rest = text.partition(":")
        origin = ""
        head, _, tail = rest.partition(":")
        if head and "=" not in head and name.strip() not in REGISTRY:  # module:attribute[:key=value,...]
            origin, rest = f"{name}:{head.strip()}", tail
        params = {}
        if rest.strip():
            for item in rest.split(","):
                key, eq, val = item.partition("=")
                if not eq or not key.strip():
                    raise ValueError(f"malformed estimator parameter {item!r} in {spec!r} (expected key=value)")
                params[key.strip()] = parse_value(val)
        return _make_spec(name, params, origin)
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        name, params = spec
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise TypeError(f"estimator parameters must be a dict, got {type(params).__name__}")
        return _make_spec(name, dict(params))
    raise TypeError(f"estimator must be a name, 'name:k=v' string or (name, params) pair, got {spec!r}")


def parse_estimators(specs) -> list[EstimatorConfig]:
    """Parse a list of estimator specifications (or one comma-separated string).

    In a string, estimators are separated by commas or whitespace; a piece ``key=value``
    without a name continues the parameters of the previous estimator, so
    ``"seq,mask_tok:lo=0.5,hi=2,snis"`` is ``seq``, ``mask_tok(lo=0.5, hi=2)``, ``snis``.
    Duplicates (same name and parameters) are dropped.

    Raises
    ------
    ValueError
        Empty list, unknown estimator or parameter.
    """
    if isinstance(specs, (str, EstimatorConfig)):
        specs = [specs]
    if isinstance(specs, tuple) and len(specs) == 2 and isinstance(specs[1], dict):
        specs = [specs]
    items = split_items(specs, "estimator")
    out = []
    for item in items:
        spec = parse_estimator(item)
        if spec not in out:
            out.append(spec)
    if not out:
        raise ValueError("no estimator given")
    return out


def split_items(specs, what: str) -> list:
    """Split comma/space-separated ``name[:k=v,...]`` text into items (non-strings pass through).

    A piece ``key=value`` without a name continues the parameters of the previous item, so
    ``"seq,mask_tok:lo=0.5,hi=2,snis"`` gives ``["seq", "mask_tok:lo=0.5,hi=2", "snis"]``.
    Shared by the estimator and objective lists of the commands.
    """
    items = []
    for s in specs:
        if not isinstance(s, str):
            items.append(s)
            continue
        for piece in s.replace(" ", ",").split(","):
            piece = piece.strip()
            if not piece:
                continue
            if "=" in piece and ":" not in piece:
                if not items or not isinstance(items[-1], str):
                    raise ValueError(f"{what} parameter {piece!r} does not follow an {what} name"
                                     if what[0] in "aeiou" else
                                     f"{what} parameter {piece!r} does not follow a {what} name")
                items[-1] = items[-1] + ("," if ":" in items[-1] else ":") + piece
            else:
                items.append(piece)
    return items
