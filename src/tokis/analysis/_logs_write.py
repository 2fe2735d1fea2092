"""Writer of training logs in a framework's column names (examples and tests: tokis writes the files it reads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._logs import PRESETS, detect_format
from ._logs_check import ROLES

__all__ = ["write_log"]


def write_log(path, target, behavior, mask=None, rewards=None, groups=None, *, preset="verl", ragged=True,
              fmt=None) -> Path:
    """Write per-token log-probabilities in a framework's column names.

    Parameters
    ----------
    path : str or Path
        Output file; the format comes from the extension (or ``fmt``).
    target, behavior : float (n, T)
        Padded log-probabilities (trainer, sampler).
    mask : bool (n, T), optional
        Real tokens (default all).
    rewards : float (n,) or (n, T), optional
    groups : array (n,), optional
    preset : {"verl", "trl", "slime"}
        Column names: the first candidate of each role.
    ragged : bool
        parquet/jsonl: one list per row holding its tokens up to its last real one (else the
        padded row); pt: a list of per-sample dicts (else a dict of (n, T) tensors). npz is
        always padded.
    fmt : str, optional

    Returns
    -------
    Path
    """
    fmt = detect_format(path, fmt)
    names = {role: (getattr(PRESETS[preset], role) or (None,))[0] for role in ROLES}
    names["mask"] = names["mask"] or "mask"
    names["reward"] = names["reward"] or "rewards"
    names["group"] = names["group"] or "group"
    target, behavior = np.asarray(target), np.asarray(behavior)
    m = np.ones(target.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    cols = {names["target"]: target, names["behavior"]: behavior, names["mask"]: m.astype(np.int8)}
    if rewards is not None:
        cols[names["reward"]] = np.asarray(rewards)
    if groups is not None:
        cols[names["group"]] = np.asarray(groups)
    per_token = [k for k, v in cols.items() if v.ndim == 2]
    if fmt == "npz" or (fmt == "pt" and not ragged):
        if fmt == "npz":
            np.savez_compressed(path, **cols)
        else:
            import torch

            torch.save({k: (torch.from_numpy(np.ascontiguousarray(v)) if v.dtype != object else list(v))
                        for k, v in cols.items()}, path)
        return Path(path)
    ends = (np.where(m, np.arange(m.shape[1]) + 1, 0).max(axis=1) if ragged else np.full(m.shape[0], m.shape[1]))
    rows = {k: ([v[i, :ends[i]] for i in range(len(v))] if k in per_token else list(v)) for k, v in cols.items()}
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({k: pa.array([r.tolist() if hasattr(r, "tolist") else r for r in v])
                                 for k, v in rows.items()}), path)
    elif fmt == "jsonl":
        with open(path, "w") as fh:
            for i in range(m.shape[0]):
                fh.write(json.dumps({k: (v[i].tolist() if hasattr(v[i], "tolist") else v[i]) for k, v in rows.items()})
                         + "\n")
    else:
        import torch

        torch.save([{k: (torch.from_numpy(np.ascontiguousarray(v[i])) if k in per_token
                         else (v[i].item() if hasattr(v[i], "item") else v[i])) for k, v in rows.items()}
                    for i in range(m.shape[0])], path)
    return Path(path)
