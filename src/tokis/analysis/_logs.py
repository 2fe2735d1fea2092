r"""Per-token log-probabilities of a training run: framework presets and readers by format.

A training log holds, per sampled response, the log-probability of each sampled token under the
trainer (the *target* :math:`\pi`, e.g. :math:`\pi_{old}`) and under the sampler (the
*behaviour* :math:`\mu`, e.g. vLLM or SGLang), a mask of the tokens the policy produced, and
optionally a reward and a prompt-group id. There is no standard layout; :data:`PRESETS` names the
columns of three frameworks (per role, the first name present in the file is used):

======  =====================  =========================  ====================  ===============================
preset  target (trainer)       behaviour (sampler)        mask                  reward, group
======  =====================  =========================  ====================  ===============================
verl    old_log_probs          rollout_log_probs          response_mask         token_level_scores, uid
trl     old_per_token_logps    sampling_per_token_logps   completion_mask       rewards
slime   log_probs              rollout_log_probs          loss_masks            raw_reward (or rewards)
======  =====================  =========================  ====================  ===============================

Formats (chosen by the extension, or ``fmt``): parquet (pyarrow; list columns, one row per
response, ragged or padded), jsonl (one JSON object per line; lists for per-token columns),
npz (padded (n, T) arrays and (n,) arrays) and torch ``.pt``/``.pth`` (``torch.load`` with
``weights_only=True``, where torch is installed: a dict of tensors or lists, or a list of
per-sample dicts). A per-token column is a 2-D array (padded) or a list of per-row arrays
(ragged); ragged rows are padded to the longest row, and the mask (when given) must have the
same length as the log-probs in every row.

Every problem raises ``ValueError`` (``TypeError`` for a wrong Python type) with a message
naming the column, the row and the count: a missing column (the file's columns are listed),
ragged rows whose lengths disagree, NaN or infinite log-probabilities at real tokens, an
unreadable file (the validation is :func:`._logs_check.assemble`).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._logs_check import ROLES, LogBatch, Ragged, _ragged, assemble

__all__ = ["PRESETS", "Preset", "FORMATS", "detect_format", "open_log", "list_columns", "pick_preset",
           "resolve_columns", "load_log"]

#: File formats and their extensions.
FORMATS = {"parquet": (".parquet", ".pq"), "jsonl": (".jsonl", ".json", ".ndjson"), "npz": (".npz",),
           "pt": (".pt", ".pth")}


@dataclass(frozen=True)
class Preset:
    """Candidate column names of one framework per role (the first present in the file is used)."""

    target: tuple
    behavior: tuple
    mask: tuple = ()
    reward: tuple = ()
    group: tuple = ()


#: Column names of verl (DataProto batch), TRL (GRPOTrainer inputs) and slime (rollout data).
PRESETS = {
    "verl": Preset(("old_log_probs",), ("rollout_log_probs",), ("response_mask",),
                   ("token_level_scores", "token_level_rewards"), ("uid",)),
    "trl": Preset(("old_per_token_logps",), ("sampling_per_token_logps",), ("completion_mask",), ("rewards",)),
    "slime": Preset(("log_probs",), ("rollout_log_probs",), ("loss_masks", "loss_mask"), ("raw_reward", "rewards")),
}


# ---------------------------------------------------------------------------------------------
# readers: reader(path) -> (column names, read(names) -> {name: column}); a column is a numpy
# array (n,) or (n, T), or a Ragged
# ---------------------------------------------------------------------------------------------


def detect_format(path, fmt=None) -> str:
    """The format of ``path``: ``fmt`` when given, else from the extension."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    for name, exts in FORMATS.items():
        if suffix in exts:
            return name
    known = ", ".join(e for exts in FORMATS.values() for e in exts)
    raise ValueError(f"cannot tell the format of {str(path)!r} from its extension; use one of {known} or give --format")


def _cannot(path, fmt, err) -> ValueError:
    text = " ".join(str(err).split()) or type(err).__name__
    return ValueError(f"cannot read {str(path)!r} as {fmt}: {text}")


def _parquet(path):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        names = list(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as err:
        raise _cannot(path, "parquet", err) from None

    def read(wanted):
        try:
            table = pq.read_table(path, columns=list(wanted))
        except (OSError, pa.ArrowException) as err:
            raise _cannot(path, "parquet", err) from None
        out = {}
        for name in wanted:
            col = table.column(name).combine_chunks()
            if col.null_count:
                row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
                raise ValueError(f"column {name!r} is null in {col.null_count} rows (first: row {row})")
            if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
                    or pa.types.is_fixed_size_list(col.type)):
                out[name] = col.to_numpy(zero_copy_only=False)
                continue
            flat = pc.list_flatten(col)
            if not any(f(flat.type) for f in (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean,
                                              pa.types.is_null)):
                raise ValueError(f"column {name!r} holds lists of {flat.type}, not numbers")
            lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
            out[name] = Ragged(flat.cast(pa.float64()).to_numpy(zero_copy_only=False),
                               np.concatenate([[0], np.cumsum(lengths)]))
        return out

    return names, read


def _per_row(values, name: str):
    """A column from one value per row: lists -> Ragged, scalars -> array (n,)."""
    lists = [isinstance(v, (list, tuple)) or (hasattr(v, "ndim") and v.ndim == 1) for v in values]
    if all(lists):
        return _ragged(values, name)
    if any(lists):
        raise ValueError(f"column {name!r} mixes lists and single values across rows")
    return np.asarray([v.item() if hasattr(v, "item") else v for v in values])


def _records(rows, what: str):
    """``(names, read)`` over a list of per-row dicts (jsonl lines, torch per-sample dicts)."""

    def read(wanted):
        out = {}
        for name in wanted:
            missing = next((i for i, r in enumerate(rows) if name not in r), None)
            if missing is not None:
                raise ValueError(f"column {name!r} is missing in {what} {missing}")
            out[name] = _per_row([r[name] for r in rows], name)
        return out

    return list(dict.fromkeys(k for r in rows for k in r)), read


def _jsonl(path):
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise _cannot(path, "jsonl", err) from None
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"cannot read {str(path)!r} as jsonl: line {i} is not JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"cannot read {str(path)!r} as jsonl: line {i} is not a JSON object")
        rows.append(row)
    return _records(rows, "row")


def _npz(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {name: z[name] for name in z.files}
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise ValueError(f"cannot read {str(path)!r} as npz: it holds object arrays (ragged rows); save padded "
                             "(n, T) arrays with a mask instead") from None
        raise _cannot(path, "npz", err) from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise _cannot(path, "npz", err) from None
    return list(data), lambda wanted: {name: data[name] for name in wanted}


def _torch_value(v):
    import torch

    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        return v.double().numpy() if v.is_floating_point() else v.numpy()  # bf16 has no numpy dtype
    if isinstance(v, (list, tuple)):
        return [_torch_value(x) for x in v]
    return v


def _pt(path):
    try:
        import torch
    except ImportError:
        raise ValueError(f"reading {str(path)!r} needs torch, which is not installed (pip install torch), or save "
                         "the tensors as npz or parquet") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds (pickle, zip, runtime): all mean unreadable
        raise _cannot(path, "pt", err) from None
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(s, Mapping) for s in obj):
        return _records([{k: _torch_value(v) for k, v in s.items()} for s in obj], "sample")
    if not isinstance(obj, Mapping):
        raise ValueError(f"cannot read {str(path)!r} as pt: expected a dict of tensors or a list of per-sample dicts, "
                         f"got {type(obj).__name__}")
    data = {str(k): _torch_value(v) for k, v in obj.items()}
    return list(data), lambda wanted: {name: (_per_row(data[name], name) if isinstance(data[name], list)
                                              else np.asarray(data[name])) for name in wanted}


_READERS = {"parquet": _parquet, "jsonl": _jsonl, "npz": _npz, "pt": _pt}


def open_log(path, fmt=None):
    """``(columns, read)``: the file's column names and ``read(names) -> {name: array (n,) | (n, T) | Ragged}``.

    The file is parsed once (parquet reads only the columns asked for).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no such file: {str(path)!r}")
    return _READERS[detect_format(path, fmt)](p)


def list_columns(path, fmt=None) -> list[str]:
    """Names of the columns (keys) in the file."""
    return open_log(path, fmt)[0]


def pick_preset(available) -> str | None:
    """The first preset whose target and behaviour columns are both among ``available`` (None if none)."""
    cols = set(available)
    return next((name for name, p in PRESETS.items()
                 if cols.intersection(p.target) and cols.intersection(p.behavior)), None)


def resolve_columns(available, *, preset=None, **given) -> tuple[dict, str | None]:
    """Map each role (:data:`ROLES`) to a column name of the file, or None.

    Parameters
    ----------
    available : sequence of str
        The file's columns.
    preset : {"verl", "trl", "slime"}, optional
        Candidate names per role; the first present is used. Default: when the target or the
        behaviour column is not given, the first preset that fits (:func:`pick_preset`).
    **given : str or None
        Explicit column names per role (``target=``, ``behavior=``, ...), overriding the preset.

    Returns
    -------
    (dict, str or None)
        Role -> column name, and the preset used.

    Raises
    ------
    ValueError
        An unknown preset, an explicit column the file lacks, or no target/behaviour column.
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    cols = list(available)
    if preset is None and (given.get("target") is None or given.get("behavior") is None):
        preset = pick_preset(cols)
    shown = ", ".join(cols) if len(cols) <= 30 else ", ".join(cols[:30]) + f", ... ({len(cols)} in all)"
    out = {}
    for role in ROLES:
        name = given.get(role)
        if name is not None:
            if name not in cols:
                raise ValueError(f"--{role} column {name!r} is not in the file; its columns: {shown}")
            out[role] = name
            continue
        candidates = getattr(PRESETS[preset], role) if preset else ()
        out[role] = next((c for c in candidates if c in cols), None)
        if out[role] is None and role in ("target", "behavior"):
            if candidates:
                raise ValueError(f"the {role} column of preset {preset!r} ({' or '.join(candidates)}) is not in the "
                                 f"file; its columns: {shown}")
            raise ValueError(f"no {role} column: give --{role} COLUMN or --preset ({', '.join(PRESETS)}); the file's "
                             f"columns: {shown}")
    return out, preset


def load_log(path, *, preset=None, fmt=None, **columns) -> LogBatch:
    """Read a training log into a :class:`LogBatch`.

    Parameters
    ----------
    path : str or Path
        A parquet, jsonl, npz or torch file (see the module docstring).
    preset : {"verl", "trl", "slime"}, optional
        Column names of a framework (default: the first that fits, unless ``target`` and
        ``behavior`` are given).
    fmt : {"parquet", "jsonl", "npz", "pt"}, optional
        Overrides the extension.
    **columns : str
        ``target=``, ``behavior=``, ``mask=``, ``reward=``, ``group=``: explicit column names
        (override the preset).

    Returns
    -------
    LogBatch
        ``columns`` maps each role to its column name (None when absent).
    """
    unknown = set(columns) - set(ROLES)
    if unknown:
        raise TypeError(f"unknown column roles {sorted(unknown)}; choose from {', '.join(ROLES)}")
    available, read = open_log(path, fmt)
    roles, preset = resolve_columns(available, preset=preset, **columns)
    data = read([c for c in dict.fromkeys(roles.values()) if c is not None])
    labels = {role: f"column {name!r}" for role, name in roles.items() if name is not None}
    batch = assemble(*(data[roles[r]] if roles[r] is not None else None for r in ROLES), labels=labels)
    return LogBatch(batch.target, batch.behavior, batch.mask, batch.rewards, batch.groups, dict(roles), preset)
