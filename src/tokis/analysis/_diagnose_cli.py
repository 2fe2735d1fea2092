"""``tokis diagnose FILE``: how off-policy a training run is, from its per-token log-probabilities.

A command plug-in (see :mod:`tokis.analysis._cli_args`): :func:`add_parser` builds the options with
argparse only; :func:`run` imports the readers and the computation. :func:`format_report` turns a
:class:`~tokis.analysis._diagnose_log.LogDiagnosis` into the markdown printed on stdout.
"""

from __future__ import annotations

import sys

from . import _cli_args as A

__all__ = ["add_parser", "run", "format_report", "write_csv"]

_PRESETS = ("verl", "trl", "slime")  # the keys of _logs.PRESETS, listed here so --help needs no import


def add_parser(sub):
    p = sub.add_parser(
        "diagnose", help="how off-policy is a training run: diagnostics of its per-token log-probs",
        description="Read per-token log-probs of the trainer (target pi) and the sampler (behaviour mu) from a "
        "parquet, jsonl, npz or torch .pt file and report the weight diagnostics (Kish ESS, largest-weight share, "
        "PSIS k-hat, KL k1/k2/k3, token and sequence chi2) overall and per response-length bucket, the fraction of "
        "tokens and sequences outside the thresholds frameworks use, every estimator's value with an interval "
        "(with rewards), and an OLS fit of the log-weight variance against length. The log-ratio is target - "
        "behaviour per token.")
    p.add_argument("file", metavar="FILE", help="parquet, jsonl, npz or .pt file, one row per response")
    c = p.add_argument_group("columns (a preset, or explicit names that override it)")
    c.add_argument("--preset", default=None, metavar="NAME",
                   help=f"column names of {', '.join(_PRESETS)} (default: the first preset whose target and "
                        "behaviour columns are in the file)")
    c.add_argument("--target", default=None, metavar="COL", help="trainer log-probs (pi), e.g. old_log_probs")
    c.add_argument("--behavior", default=None, metavar="COL", help="sampler log-probs (mu), e.g. rollout_log_probs")
    c.add_argument("--mask", default=None, metavar="COL", help="1 at the tokens the policy produced (default: all)")
    c.add_argument("--reward", default=None, metavar="COL", help="reward per response, or per token (summed)")
    c.add_argument("--group", default=None, metavar="COL", help="prompt group of each response (e.g. uid)")
    c.add_argument("--format", default=None, metavar="FMT", help="parquet, jsonl, npz or pt (default: the extension)")
    r = p.add_argument_group("report")
    r.add_argument("--buckets", type=int, default=4, metavar="K", help="response-length buckets (default 4)")
    r.add_argument("--level", type=float, default=0.95, help="level of the intervals (default 0.95)")
    r.add_argument("--estimators", default=None, metavar="LIST",
                   help="estimators with optional parameters, e.g. 'seq,tok,clip_tok:c=2' (default: all registered)")
    r.add_argument("--backend", default="numpy", help="estimator backend (default numpy: one pass over a log does "
                   "not repay compiling kernels)")
    r.add_argument("--bins", type=int, default=80, help="bins of the log-ratio histogram (default 80)")
    r.add_argument("--out", default=None, metavar="DIR", help="write CSV tables and PNG plots to DIR")
    r.add_argument("--digits", type=int, default=4, help="significant digits in the printed tables (default 4)")
    return p


def run(a) -> int:
    from ._diagnose_log import check_options, diagnose_log
    from ._logs import load_log

    check_options(buckets=a.buckets, level=a.level, bins=a.bins, estimators=a.estimators)
    batch = load_log(a.file, preset=a.preset, fmt=a.format, target=a.target, behavior=a.behavior, mask=a.mask,
                     reward=a.reward, group=a.group)
    if a.preset is None and batch.preset is not None:
        sys.stderr.write(f"tokis: reading the column names of preset {batch.preset!r} (--preset to choose another)\n")
    result = diagnose_log(batch.target, batch.behavior, batch.mask, batch.rewards, batch.groups, buckets=a.buckets,
                          level=a.level, estimators=a.estimators, bins=a.bins, backend=a.backend)
    A.say(format_report(result, source=a.file, columns=batch.columns, digits=a.digits))
    if a.out:
        from ._diagnose_plots import plot_diagnosis

        paths = write_csv(result, a.out)
        paths += plot_diagnosis(result, a.out, title=str(a.file))
        sys.stderr.write(f"tokis: wrote {len(paths)} files to {a.out}\n")
    return 0


def write_csv(result, out_dir) -> list:
    """Write every table of ``result`` as ``diagnose_NAME.csv`` in ``out_dir``."""
    from pathlib import Path

    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = dict(overall=result.overall, by_length=result.by_length, thresholds=result.thresholds,
                  growth_fit=pd.DataFrame([result.growth.as_dict()]), growth_implied=result.growth.implied,
                  variance_by_length=result.variance_by_length, histogram=result.histogram,
                  estimators=result.estimators, groups=result.groups)
    written = []
    for name, table in tables.items():
        if table is not None:
            path = out / f"diagnose_{name}.csv"
            table.to_csv(path, index=False)
            written.append(path)
    return written


def format_report(result, *, source: str = "", columns=None, digits: int = 4) -> str:
    """The markdown report of a :class:`~tokis.analysis._diagnose_log.LogDiagnosis`."""
    import pandas as pd

    from ._diagnose_log import OVERALL_FIELDS
    from ._output import format_value, to_markdown

    def fmt(v):
        return format_value(v, digits)

    L = result.lengths.iloc[0]
    cols = dict(columns or {})
    head = [f"## tokis diagnose{': ' + str(source) if source else ''}", "",
            f"{result.n} responses, {result.num_tokens} tokens (length {fmt(L['length_min'])} to "
            f"{fmt(L['length_max'])}, median {fmt(L['length_median'])}). Target (trainer, pi): "
            f"{cols.get('target') or 'target_logp'}; behaviour (sampler, mu): {cols.get('behavior') or 'behavior_logp'}; "
            f"mask: {cols.get('mask') or 'all tokens'}. Log-ratio l = log pi - log mu per token, r = exp(l), "
            "W = prod r."]
    o = result.overall.iloc[0]
    rows = [dict(quantity=k, value=o[k], meaning=m + (f" ({o['khat_reliability']})" if k == "khat" else ""))
            for k, m in OVERALL_FIELDS.items()]
    out = head + ["", "### Weights, whole batch", "", to_markdown(pd.DataFrame(rows), digits=digits)]

    b = result.by_length[["bucket", "n", "num_tokens", "ess_fraction", "token_ess_fraction", "max_weight_share",
                          "khat", "khat_reliability", "kl_k3", "kl_k3_seq", "token_chi2", "log_seq_second_moment",
                          "seq_chi2"]].rename(columns={"bucket": "length", "num_tokens": "tokens",
                                                       "khat_reliability": "khat_reading"})
    out += ["", "### By response length", "", to_markdown(b, digits=digits)]

    t = result.thresholds.copy()
    t.insert(1, "band", [f"[{lo:g}, {hi:g}]" for lo, hi in zip(t["lo"], t["hi"])])
    t = t.drop(columns=["lo", "hi"])
    out += ["", "### Outside the thresholds frameworks use (fraction of tokens r_t, sequences W, and GSPO's "
                "exp(mean l) outside the band)", "", to_markdown(t, digits=digits)]

    g = result.growth
    out += ["", "### Growth of the log-weight variance with length", ""]
    if g.fitted:
        out.append(f"OLS of the squared residual of log W on L (HC1): Var(log W | L) grows by {fmt(g.rate)} per token "
                   f"({result.level:.0%} CI [{fmt(g.rate_lo)}, {fmt(g.rate_hi)}]; intercept {fmt(g.intercept)}); mean "
                   f"log-ratio per token {fmt(g.drift)}. log(1 + token chi2) = {fmt(g.renyi_rate)} per token. "
                   "Implied for sequence-level weights (fit: lognormal, log E[W^2] = rate * L; renyi: "
                   "(1 + chi2)^L, exact when every context has the same per-token chi2):")
    else:
        out.append(f"{g.reason}. log(1 + token chi2) = {fmt(g.renyi_rate)} per token implies (renyi columns):")
    out += ["", to_markdown(g.implied, digits=digits)]

    if result.estimators is not None:
        e = result.estimators.copy()
        out += ["", f"### Estimates of J(pi) with {result.level:.0%} normal intervals (rewards: "
                    f"{cols.get('reward') or 'given'})", "", to_markdown(e, digits=digits), "",
                f"The sampler's own mean reward (no correction): {fmt(result.behavior_mean_reward)} ± "
                f"{fmt(result.behavior_mean_reward_stderr)} (std. error)."]
        if "stderr_cluster" in e:
            out.append("stderr_cluster, ci_cluster_*: cluster-robust over the prompt groups (responses to one prompt "
                       "are not independent); NaN for per-step ratio estimators.")
    if result.groups is not None:
        out += ["", f"### Within prompt groups ({cols.get('group') or 'groups'}): Kish ESS fraction and largest-weight "
                    "share of W inside each group", "", to_markdown(result.groups, digits=digits)]
    if result.notes:
        out += ["", *("Note: " + n for n in result.notes)]
    return "\n".join(out)
