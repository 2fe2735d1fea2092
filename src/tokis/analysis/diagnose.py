"""``tokis diagnose`` as a module: ``python -m tokis.analysis.diagnose FILE`` and its Python functions.

The readers live in :mod:`._logs`, the validation in :mod:`._logs_check`, the writer in :mod:`._logs_write`,
the computation in :mod:`._diagnose_log`, the report and the command in :mod:`._diagnose_cli`, the plots in
:mod:`._diagnose_plots`; this module re-exports them.

>>> from tokis.analysis.diagnose import diagnose_log, diagnose_file, load_log
>>> report = diagnose_file("examples/diagnose_example.parquet", preset="verl")    # doctest: +SKIP
>>> report.overall[["ess_fraction", "khat", "kl_k3", "token_chi2", "seq_chi2"]]   # doctest: +SKIP
"""

from __future__ import annotations

import sys

from ._cli import main as _cli_main
from ._diagnose_cli import format_report, write_csv
from ._diagnose_log import (
    OVERALL_FIELDS,
    THRESHOLDS,
    GrowthFit,
    LogDiagnosis,
    diagnose_file,
    diagnose_log,
    fit_variance_growth,
    khat_reliability,
    length_buckets,
)
from ._diagnose_plots import plot_diagnosis
from ._logs import FORMATS, PRESETS, Preset, list_columns, load_log
from ._logs_check import LogBatch, assemble
from ._logs_write import write_log

__all__ = ["diagnose_log", "diagnose_file", "LogDiagnosis", "GrowthFit", "fit_variance_growth", "length_buckets",
           "khat_reliability", "THRESHOLDS", "OVERALL_FIELDS", "format_report", "write_csv", "plot_diagnosis",
           "load_log", "write_log", "list_columns", "assemble", "LogBatch", "Preset", "PRESETS", "FORMATS", "main"]


def main(argv=None) -> int:
    """``python -m tokis.analysis.diagnose FILE``: same as ``tokis diagnose FILE``."""
    return _cli_main(["diagnose", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
