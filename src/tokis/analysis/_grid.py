r"""Grids of configurations from a TOML file (``tokis sweep grid.toml``): every combination, one sweep.

A grid file holds flat keys (stdlib :mod:`tomllib`); a key given a list is an axis of the grid,
a scalar a constant, and the grid is the Cartesian product of the axes:

====================  =============================================================================
key                   meaning (default)
====================  =============================================================================
``family``            ``iid``, ``ngram`` or ``prefix_tree`` (``"ngram"``)
``vocab``             vocabulary size V (8)
``order``             n-gram order k (1)
``eos``               end-of-sequence token (none)
``reward``            ``last``, ``random``, ``count``, ``pattern``, ``parity``, ``frequency`` (``"last"``)
``reward_token``      token of the count/parity/last/frequency reward (0)
``threshold``         threshold of the count reward (2)
``pattern``           pattern of the pattern reward, a list of tokens (``[0, 1]``; a list of lists
                      is an axis)
``noise``             ``none`` or ``bernoulli`` (``"none"``)
``mdp_seed``          seed of the random reward, π and the perturbation direction (0)
``scale``             std of π's Gaussian logits (1.0)
``model``             behaviour model: ``perturb``, ``temperature``, ``top_p``, ``top_k``, ``bf16``,
                      ``fp16`` (``"perturb"``)
``divergence``        ``kl`` or ``chi2``: ``perturb`` to that per-context divergence KL(π‖μ) or
                      χ²(π‖μ) = value (as ``tokis horizon --kl``); ``sampler_kl``: the model's knob
                      calibrated so that the per-token KL(μ‖π) under d^μ is the value (as ``tokis
                      mismatch``; any model) (``"kl"``)
``values``            the divergences, ``>= 0`` (``[0.05]``); rounding models (``bf16``, ``fp16``)
                      have no knob: one point each, ``value`` NaN
``estimators``        estimator specifications, each a column of every point, not an axis
                      (``["seq", "tok", "snis", "clip_tok", "geo", "clip_prod"]``)
``horizons``          horizons T, a list or ``"1..64"`` (powers of two) (``"1..64"``)
``n``                 sequences per replication (1024)
``replications``      Monte Carlo replications R (1000)
``seeds``             master seeds of the replications (0)
``backend``           ``auto``, ``numpy``, ``numba``, ``cupy`` (``"auto"``; not an axis)
====================  =============================================================================

Each combination of everything but ``estimators`` is a point of :func:`~tokis.analysis._sweep.run_sweep`
(its cells are the estimators), so the store keys, resume, caching, local processes and Dask
are those of every sweep, and a rerun of the same grid computes nothing.

Command line: ``tokis sweep grid.toml`` (:mod:`tokis.analysis._sweep_cli`).
"""

from __future__ import annotations

import itertools
import math
import numbers
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .._core._rng import check_seed
from ._common import parse_horizons
from ._config import Behavior, Family, parse_estimators
from ._mismatch import MODELS, calibrate
from ._sweep import Point, run_sweep

__all__ = ["Grid", "KEYS", "FAMILY_KEYS", "DIVERGENCES", "CONFIG_COLUMNS", "load_grid", "parse_grid",
           "grid_points", "run_grid", "display_coords"]

#: Keys of a grid file that describe the MDP family (:class:`~tokis.analysis.Family`), with defaults.
FAMILY_KEYS = {"family": "ngram", "vocab": 8, "order": 1, "eos": None, "reward": "last", "reward_token": 0,
               "threshold": 2, "pattern": [0, 1], "noise": "none", "mdp_seed": 0, "scale": 1.0}
#: Every key of a grid file, with its default.
KEYS = {**FAMILY_KEYS, "model": "perturb", "divergence": "kl", "values": [0.05],
        "estimators": ["seq", "tok", "snis", "clip_tok", "geo", "clip_prod"], "horizons": "1..64", "n": 1024,
        "replications": 1000, "seeds": [0], "backend": "auto"}
#: Values of ``divergence``.
DIVERGENCES = ("kl", "chi2", "sampler_kl")
#: Configuration columns of the grid's table, before the sweep's columns (``n`` and
#: ``replications`` are there too, among the harness columns).
CONFIG_COLUMNS = (*FAMILY_KEYS, "model", "divergence", "value", "knob", "T", "seed")

_INTS = ("vocab", "order", "eos", "reward_token", "threshold", "mdp_seed", "n", "replications", "seeds")
_STRINGS = ("family", "reward", "noise", "model", "divergence", "backend")
_ROUNDING = ("bf16", "fp16")


@dataclass(frozen=True)
class Grid:
    """A parsed grid: the axes, every value validated.

    Attributes
    ----------
    source : str
        Where it came from (the file, or ``"<dict>"``), named in errors.
    axes : tuple of (str, tuple)
        Every key except ``estimators`` and ``backend`` with its values (one value: a constant).
    estimators : tuple of EstimatorConfig
    backend : str
    """

    source: str
    axes: tuple
    estimators: tuple
    backend: str

    def axis(self, key: str) -> tuple:
        """The values of ``key``."""
        return dict(self.axes)[key]

    @property
    def varying(self) -> list[str]:
        """Keys with more than one value, in :data:`KEYS` order."""
        return [k for k, v in self.axes if len(v) > 1]

    @property
    def points(self) -> int:
        """Number of points (combinations); rounding models count once per combination of the rest."""
        sizes = {k: len(v) for k, v in self.axes}
        models = self.axis("model")
        other = math.prod(s for k, s in sizes.items() if k not in ("model", "divergence", "values"))
        per_knob = sum(1 for m in models if m not in _ROUNDING) * sizes["divergence"] * sizes["values"]
        per_rounding = sum(1 for m in models if m in _ROUNDING)
        return other * (per_knob + per_rounding)

    @property
    def cells(self) -> int:
        """Number of cells: points times estimators."""
        return self.points * len(self.estimators)


def _fail(source: str, key: str, message: str):
    raise ValueError(f"{source}: {key}: {message}")


def _items(source: str, key: str, value) -> list:
    """The values of a key: a list is an axis, anything else one value."""
    if key == "pattern":  # itself a list: a list of lists is an axis
        if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            return value
        return [value]
    if key == "horizons":
        try:
            return parse_horizons(value, "horizons")
        except (ValueError, TypeError) as err:
            _fail(source, key, str(err))
    if isinstance(value, list):
        if not value:
            _fail(source, key, "an empty list (give at least one value)")
        return value
    return [value]


def _check_value(source: str, key: str, v):
    if key in _INTS:
        if key == "eos" and v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            _fail(source, key, f"must be an integer, got {type(v).__name__} {v!r}")
        least = 2 if key == "replications" else 1 if key in ("n", "vocab") else 0
        if v < least:
            _fail(source, key, f"must be >= {least}, got {v}")
        if key == "seeds":
            try:
                check_seed(v)
            except (ValueError, TypeError) as err:
                _fail(source, key, " ".join(str(err).split()))
        return int(v)
    if key in _STRINGS:
        if not isinstance(v, str):
            _fail(source, key, f"must be a string, got {type(v).__name__} {v!r}")
        choices = {"model": tuple(MODELS), "divergence": DIVERGENCES, "backend": ("auto", "numpy", "numba", "cupy"),
                   "noise": ("none", "bernoulli")}.get(key)
        if choices is not None and v not in choices:
            _fail(source, key, f"unknown value {v!r}; choose from {', '.join(choices)}")
        return v
    if key in ("scale", "values"):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            _fail(source, key, f"must be a finite number, got {type(v).__name__} {v!r}")
        if v < 0:
            _fail(source, key, f"must be >= 0, got {v}")
        return float(v)
    if key == "pattern":
        if not isinstance(v, list) or not v or not all(isinstance(t, int) and not isinstance(t, bool) for t in v):
            _fail(source, key, f"must be a non-empty list of tokens (integers), got {v!r}")
        return tuple(v)
    return v


def parse_grid(data: dict, source: str = "<dict>") -> Grid:
    """Validate a grid given as a mapping (what :func:`load_grid` reads from TOML).

    Raises
    ------
    ValueError
        An unknown key, a wrong type or value, an impossible combination (a knob-less or
        non-perturbation model with ``divergence = "kl"``/``"chi2"``), or a bad family; the
        message starts with ``source`` and the key.
    """
    if not isinstance(data, dict):
        raise TypeError(f"a grid must be a mapping of keys to values, got {type(data).__name__}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r}; the keys are {', '.join(KEYS)}")
    full = {k: data.get(k, d) for k, d in KEYS.items()}
    if isinstance(full["backend"], list):
        _fail(source, "backend", "one backend, not a list")
    try:
        estimators = tuple(parse_estimators(full["estimators"]))
    except (ValueError, TypeError) as err:
        _fail(source, "estimators", " ".join(str(err).split()))
    axes = []
    for key in KEYS:
        if key in ("estimators", "backend"):
            continue
        values = [_check_value(source, key, v) for v in _items(source, key, full[key])]
        axes.append((key, tuple(dict.fromkeys(values))))
    backend = _check_value(source, "backend", full["backend"])
    ax = dict(axes)
    bad = [m for m in ax["model"] if m != "perturb" and m not in _ROUNDING]
    if bad and any(d != "sampler_kl" for d in ax["divergence"]):
        _fail(source, "model", f"{bad[0]!r} is calibrated to a sampler KL: set divergence = \"sampler_kl\" (kl and "
                               "chi2 are the per-context divergences of model \"perturb\")")
    if "chi2" in ax["divergence"] and any(m in _ROUNDING for m in ax["model"]):
        _fail(source, "model", "bf16/fp16 round the logits, they have no chi2: use divergence = \"sampler_kl\" or "
                               "\"kl\" (the value is then ignored)")
    grid = Grid(source, tuple(axes), estimators, backend)
    for combo in itertools.product(*(ax[k] for k in FAMILY_KEYS)):
        _family(dict(zip(FAMILY_KEYS, combo)), source)  # every family is valid before anything is built
    return grid


def load_grid(path) -> Grid:
    """Read and validate a grid file (TOML, see the module docstring).

    Raises
    ------
    ValueError
        The file is missing or not valid TOML, or :func:`parse_grid` rejects it (the message names
        the file and the key).
    """
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read the grid file {str(path)!r}: {err.strerror or err}") from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{p}: not a valid TOML file: {err}") from None
    return parse_grid(data, str(p))


def _family(c: dict, source: str) -> Family:
    try:
        return Family(name=c["family"], vocab=c["vocab"], order=c["order"], eos=c["eos"], reward=c["reward"],
                      token=c["reward_token"], threshold=c["threshold"], pattern=tuple(c["pattern"]),
                      noise=c["noise"], seed=c["mdp_seed"], scale=c["scale"])
    except (ValueError, TypeError) as err:
        shown = ", ".join(f"{k}={v!r}" for k, v in c.items())
        raise ValueError(f"{source}: family ({shown}): {' '.join(str(err).split())}") from None


def _behaviors(grid: Grid, family: Family, mdp, target) -> list[tuple]:
    """(model, divergence, value, knob, behaviour policy) for every behaviour combination at one MDP."""
    out = []
    for model in grid.axis("model"):
        if model in _ROUNDING:  # no knob: the logits rounded, at their natural divergence
            out.append((model, "none", math.nan, math.nan, Behavior(round=model, seed=family.seed).apply(target)))
            continue
        for kind in grid.axis("divergence"):
            for v in grid.axis("values"):
                if kind == "sampler_kl":
                    knob, b, _ = calibrate(mdp, target, model, v, seed=family.seed)
                else:  # perturb to a per-context divergence (as tokis horizon --kl / --chi2)
                    knob, b = v, Behavior(**{kind: v}, seed=family.seed)
                out.append((model, kind, v, float(knob), b.apply(target)))
    return out


def grid_points(grid: Grid) -> list[Point]:
    """The sweep points of ``grid``: family, then behaviour, T, n, replications and seed, varying last to first."""
    points = []
    for combo in itertools.product(*(grid.axis(k) for k in FAMILY_KEYS)):
        c = dict(zip(FAMILY_KEYS, combo))
        family = _family(c, grid.source)
        shown = {**c, "pattern": ",".join(map(str, c["pattern"]))}
        for T in grid.axis("horizons"):
            mdp, target = family.build(T)
            for model, kind, value, knob, mu in _behaviors(grid, family, mdp, target):
                coords = (*shown.items(), ("model", model), ("divergence", kind), ("value", value), ("knob", knob),
                          ("T", T))
                for n, R, s in itertools.product(grid.axis("n"), grid.axis("replications"), grid.axis("seeds")):
                    points.append(Point((*coords, ("seed", s)), mdp, target, mu, seed=s, n=n, replications=R))
    return points


def display_coords(grid: Grid) -> list[str]:
    """Configuration columns of the printed table: those that vary, ``T`` always (and ``knob`` when calibrated)."""
    names = {"horizons": "T", "seeds": "seed", "values": "value"}
    coords = [names.get(k, k) for k in grid.varying]
    if "sampler_kl" in grid.axis("divergence"):
        coords.append("knob")
    if "T" not in coords:
        coords.append("T")
    order = {c: i for i, c in enumerate((*CONFIG_COLUMNS, "n", "replications"))}
    return sorted(coords, key=order.__getitem__)


def run_grid(grid, *, store=None, workers=1, scheduler=None, progress=False) -> pd.DataFrame:
    """Run every cell of a grid (:func:`~tokis.analysis._sweep.run_sweep`) and return the combined table.

    Parameters
    ----------
    grid : Grid, dict, str or Path
        A parsed grid, its mapping, or a TOML file.
    store, workers, scheduler, progress
        As in :func:`~tokis.analysis.horizon.horizon`.

    Returns
    -------
    pandas.DataFrame
        One row per cell: :data:`CONFIG_COLUMNS`, ``n`` and ``replications``, then the columns of
        the horizon table (``estimator``, exact and Monte Carlo columns, ...). ``attrs``:
        ``total``, ``cached``, ``computed``, ``points``, ``varying`` (the keys with several values)
        and ``source``.
    """
    if isinstance(grid, dict):
        grid = parse_grid(grid)
    elif not isinstance(grid, Grid):
        grid = load_grid(grid)
    points = grid_points(grid)
    table = run_sweep(points, list(grid.estimators), n=grid.axis("n")[0], replications=grid.axis("replications")[0],
                      seed=grid.axis("seeds")[0], backend=grid.backend, store=store, workers=workers,
                      progress=progress, desc="sweep", scheduler=scheduler)
    lead = [*CONFIG_COLUMNS, "n", "replications"]
    table = table[lead + [c for c in table.columns if c not in lead]]
    table.attrs.update(points=len(points), varying=grid.varying, source=grid.source)
    return table
