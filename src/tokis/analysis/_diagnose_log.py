r"""How off-policy is a training run: the report of ``tokis diagnose`` on per-token log-probabilities.

Input: per sampled token the log-probability under the trainer (the target :math:`\pi`) and
under the sampler (the behaviour :math:`\mu`), so :math:`\ell_t = \log\pi - \log\mu`,
:math:`r_t = e^{\ell_t}`, :math:`W = \prod_t r_t`. :func:`diagnose_log` reports

* the diagnostics of :func:`tokis.estimators.diagnose` on the whole batch and per
  response-length bucket (Kish ESS of sequence and token weights, largest-weight share, PSIS
  :math:`\hat k` with its sample-size dependent reliability threshold, the KL estimators
  k1/k2/k3 of :math:`KL(\mu\|\pi)`, token and sequence :math:`\chi^2(\pi\|\mu)` in log space);
* the fraction of tokens, sequences and GSPO length-normalised ratios outside the thresholds
  frameworks use (:data:`THRESHOLDS`);
* every estimator's estimate of :math:`J(\pi)` with a normal interval when rewards are given
  (and a cluster-robust one over prompt groups when groups are given);
* the growth of the log-weight variance with length (:func:`fit_variance_growth`) and what it
  implies for sequence-level weights at the lengths of the batch.

References: Kish (1965); Vehtari et al. (2024), Pareto smoothed importance sampling, JMLR 25(72);
Schulman (2020), Approximating KL divergence; Cameron & Miller (2015), A practitioner's guide to
cluster-robust inference, J. Human Resources 50(2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import estimators as est
from ..estimators._psis import khat_threshold
from ._config import parse_estimators
from ._logs import load_log
from ._logs_check import assemble

__all__ = ["THRESHOLDS", "OVERALL_FIELDS", "LogDiagnosis", "GrowthFit", "diagnose_log", "diagnose_file",
           "fit_variance_growth",
           "length_buckets", "khat_reliability", "check_options"]

#: (rule, lo, hi, what it acts on): bands [lo, hi] of ratios used by the frameworks; every row reports
#: the fraction of tokens (r_t), sequences (W) and length-normalised ratios (exp(mean l)) outside.
THRESHOLDS = (
    ("TIS C=2", 0.0, 2.0, "token-level truncation min(r_t, 2); sequence-level min(W, 2)"),
    ("mask [0.5, 2]", 0.5, 2.0, "token masking (IcePop-style) or sequence rejection"),
    ("mask [0.5, 5]", 0.5, 5.0, "token masking or sequence rejection, wider band"),
    ("PPO eps=0.2", 0.8, 1.2, "PPO clip range of the token ratio"),
    ("GSPO eps=3e-4/4e-4", 1.0 - 3e-4, 1.0 + 4e-4, "GSPO clip range of exp(mean l) (geo column)"),
)

#: Fields of :class:`tokis.estimators.Diagnostics` in the report, with what they measure.
OVERALL_FIELDS = {
    "ess": "Kish ESS (sum W)^2 / sum W^2 of the sequence weights",
    "ess_fraction": "ess / n",
    "token_ess_fraction": "Kish ESS of the token ratios r_t / number of tokens",
    "max_weight_share": "largest W / sum W",
    "log_weight_max": "largest log W",
    "khat": "PSIS Pareto shape of W",
    "khat_threshold": "reliability threshold min(1 - 1/log10 n, 0.7)",
    "kl_k1": "per-token KL(mu||pi), k1 = mean -l",
    "kl_k2": "per-token KL(mu||pi), k2 = mean l^2/2 (biased, low variance)",
    "kl_k3": "per-token KL(mu||pi), k3 = mean (r - 1) - l",
    "kl_k1_seq": "sequence KL(mu||pi), k1 summed over tokens",
    "kl_k3_seq": "sequence KL(mu||pi), k3 summed over tokens",
    "token_chi2": "per-token chi2(pi||mu) = mean r^2 - 1",
    "log_seq_second_moment": "log mean W^2 (log space)",
    "seq_chi2": "sequence chi2(pi||mu) = mean W^2 - 1",
    "geo_min": "smallest exp(mean l) (GSPO ratio)",
    "geo_max": "largest exp(mean l)",
}


def khat_reliability(khat: float, n: int) -> str:
    """Vehtari et al.'s reading of :math:`\\hat k` for ``n`` draws."""
    if n < 21:
        return "not assessed (n < 21)"
    if khat <= khat_threshold(n):
        return "reliable"
    if khat <= 0.7:
        return "more draws needed"
    return "unreliable"


def _diag_row(lr, mask, **band) -> dict:
    d = est.diagnose(lr, mask, **band)
    row = {k: (int(v) if k in ("n", "num_tokens") else float(v)) for k, v in d.as_dict().items()
           if not isinstance(v, tuple) and k not in ("lo", "hi")}
    row["khat_threshold"] = khat_threshold(d.n)
    row["khat_reliability"] = khat_reliability(d.khat, d.n)
    return row


def length_buckets(lengths, k: int) -> np.ndarray:
    """Bucket index (0..) of each row: about ``k`` buckets of equal counts, ties kept together.

    Cut points are the ``j/k`` quantiles of the lengths (``j = 1..k-1``, observed values); bucket
    ``b`` holds the lengths in ``(cut_{b-1}, cut_b]``; empty buckets are dropped.
    """
    L = np.asarray(lengths)
    cuts = np.unique(np.quantile(L, np.arange(1, k) / k, method="inverted_cdf")) if k > 1 else np.array([])
    idx = np.searchsorted(cuts, L, side="left")
    return np.unique(idx, return_inverse=True)[1]


def _bucket_table(lr, mask, L, k: int) -> pd.DataFrame:
    rows, idx = [], length_buckets(L, k)
    for j in range(int(idx.max()) + 1):
        sel = idx == j
        width = int(np.max(np.where(mask[sel], np.arange(mask.shape[1]) + 1, 0)))
        a, b = int(L[sel].min()), int(L[sel].max())
        row = dict(bucket=f"{a}-{b}" if a < b else str(a), length_min=a, length_max=b, mean_length=float(L[sel].mean()))
        row.update(_diag_row(lr[sel, :max(width, 1)], mask[sel, :max(width, 1)]))
        rows.append(row)
    return pd.DataFrame(rows)


def _threshold_table(lr, mask) -> pd.DataFrame:
    rows = []
    for rule, lo, hi, acts in THRESHOLDS:
        d = est.diagnose(lr, mask, lo=lo, hi=hi)
        rows.append(dict(rule=rule, lo=lo, hi=hi, tokens_outside=d.token_mask_fraction,
                         sequences_outside=d.seq_mask_fraction, geo_outside=d.geo_outside_fraction, acts_on=acts))
    return pd.DataFrame(rows)


@dataclass(frozen=True, eq=False)
class GrowthFit:
    r"""OLS of the squared log-weight residual on length: the per-token variance rate.

    Attributes
    ----------
    fitted : bool
        False when the batch has fewer than 3 distinct lengths (``reason`` says so).
    reason : str
    rate, rate_lo, rate_hi, rate_se : float
        Slope :math:`b` of :math:`E[e^2 \mid L] = a + bL` with its interval (HC1 robust
        standard error): the log-weight variance added per token.
    intercept : float
        :math:`a`.
    drift, drift_intercept : float
        Slope :math:`d` and intercept :math:`c` of :math:`E[\log W \mid L] = c + dL`: ``drift``
        is the mean log-ratio per token (about :math:`-KL(\mu\|\pi)`).
    renyi_rate : float
        :math:`\log(1 + \chi^2_{tok})` from the per-token :math:`\chi^2` of the whole batch.
    implied : pandas.DataFrame
        At the minimum, median, 90th percentile and maximum length: the log second moment,
        ESS fraction and :math:`\chi^2` of W that the fitted rate implies (lognormal reading:
        :math:`\log E[W^2] = bL`) and that the Rényi rate implies (:math:`(1+\chi^2)^L`).
    """

    fitted: bool
    reason: str
    rate: float
    rate_lo: float
    rate_hi: float
    rate_se: float
    intercept: float
    drift: float
    drift_intercept: float
    renyi_rate: float
    implied: pd.DataFrame

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("fitted", "reason", "rate", "rate_lo", "rate_hi", "rate_se", "intercept",
                                              "drift", "drift_intercept", "renyi_rate")}


def fit_variance_growth(log_weights, lengths, *, level: float = 0.95, token_chi2: float = math.nan) -> GrowthFit:
    r"""Fit the growth of the log-weight variance with the response length.

    Two OLS fits (statsmodels): :math:`\log W_i = c + d L_i + e_i`, then
    :math:`e_i^2 = a + b L_i + u_i` with heteroskedasticity-robust (HC1) standard errors.
    With per-token log-ratios of variance :math:`\sigma^2` that are uncorrelated given the
    length, :math:`Var(\log W \mid L) = \sigma^2 L` and ``rate`` estimates :math:`\sigma^2`.
    If :math:`\log W` is normal and :math:`E[W] = 1`, :math:`E[W^2] = e^{\sigma^2 L}`: the ESS
    fraction of sequence weights at length L is :math:`e^{-\sigma^2 L}`.

    Parameters
    ----------
    log_weights : float (n,)
        :math:`\log W_i = \sum_t \ell_{it}`.
    lengths : int (n,)
    level : float
        Level of the interval on the rate.
    token_chi2 : float
        Per-token :math:`\chi^2` of the batch, for the Rényi reading.

    Returns
    -------
    GrowthFit
    """
    from statsmodels.regression.linear_model import OLS

    lw, L = np.asarray(log_weights, dtype=np.float64), np.asarray(lengths, dtype=np.float64)
    renyi = math.log1p(token_chi2) if token_chi2 > -1 else math.nan
    distinct = np.unique(L)
    at = np.unique(np.quantile(L, [0.0, 0.5, 0.9, 1.0], method="inverted_cdf"))
    nan = math.nan
    if distinct.size < 3:
        what = (f"all responses have the same length ({int(distinct[0])} tokens)" if distinct.size == 1
                else f"only {distinct.size} distinct lengths")
        return GrowthFit(False, f"{what}: no fit of the log-weight variance against length", nan, nan, nan, nan, nan,
                         nan, nan, renyi, _implied(at, nan, nan, nan, renyi))
    X = np.column_stack([np.ones_like(L), L])
    mean_fit = OLS(lw, X).fit()
    var_fit = OLS(mean_fit.resid ** 2, X).fit(cov_type="HC1")
    lo, hi = var_fit.conf_int(alpha=1 - level)[1]
    b = float(var_fit.params[1])
    return GrowthFit(True, "", b, float(lo), float(hi), float(var_fit.bse[1]), float(var_fit.params[0]),
                     float(mean_fit.params[1]), float(mean_fit.params[0]), renyi, _implied(at, b, float(lo), float(hi), renyi))


def _implied(at, b, lo, hi, renyi) -> pd.DataFrame:
    with np.errstate(over="ignore"):
        return pd.DataFrame(dict(
            length=at.astype(int), log_second_moment_fit=b * at, log_second_moment_fit_lo=lo * at,
            log_second_moment_fit_hi=hi * at, ess_fraction_fit=np.exp(-b * at), seq_chi2_fit=np.expm1(b * at),
            log_second_moment_renyi=renyi * at, ess_fraction_renyi=np.exp(-renyi * at)))


def _variance_by_length(lw, L, fit: GrowthFit, k: int = 20) -> pd.DataFrame:
    """Variance of the log-weight (around the fitted mean line when fitted) per length bucket, for the plot."""
    b = length_buckets(L, k)
    e = lw - (fit.drift_intercept + fit.drift * L) if fit.fitted else lw
    rows = []
    for j in range(int(b.max()) + 1):
        x, Lj = e[b == j], L[b == j]
        rows.append(dict(length_min=int(Lj.min()), length_max=int(Lj.max()), mean_length=float(Lj.mean()), n=int(x.size),
                         var_log_weight=float(x.var(ddof=1)) if x.size > 1 else math.nan,
                         fitted=fit.intercept + fit.rate * float(Lj.mean()) if fit.fitted else math.nan))
    return pd.DataFrame(rows)


def _groups_table(lw, codes) -> pd.DataFrame:
    """Within-group Kish ESS fraction and largest-weight share of the sequence weights (log space)."""
    G = int(codes.max()) + 1
    size = np.bincount(codes, minlength=G)
    top = np.full(G, -np.inf)
    np.maximum.at(top, codes, lw)
    w = np.exp(lw - top[codes])
    s1, s2 = np.bincount(codes, w, G), np.bincount(codes, w * w, G)
    frac = s1 * s1 / s2 / size
    share = 1.0 / s1
    return pd.DataFrame([dict(groups=G, size_min=int(size.min()), size_median=float(np.median(size)),
                              size_max=int(size.max()), ess_fraction_min=float(frac.min()),
                              ess_fraction_q10=float(np.quantile(frac, 0.1)), ess_fraction_median=float(np.median(frac)),
                              groups_ess_below_half=float(np.mean(frac < 0.5)),
                              max_weight_share_median=float(np.median(share)), max_weight_share_max=float(share.max()))])


def _cluster_stderr(e, codes) -> float:
    """Cluster-robust standard error sqrt(G/(G-1) sum_g (sum_{i in g} z_i)^2) / n of an estimate.

    ``z_i`` is the centred per-sample statistic (mean estimators) or the linearised ratio
    contribution ``(N_i - value D_i) / mean D`` (ratio estimators); NaN for per-step ratios.
    """
    G = int(codes.max()) + 1
    if G < 2:
        return math.nan
    if e.samples is not None and np.ndim(e.samples) == 1:
        s = np.asarray(e.samples, dtype=np.float64)
        z, scale = s - s.mean(), math.exp(e.log_scale)
    elif e.numerator is not None and np.ndim(e.numerator) == 1:
        N, D = np.asarray(e.numerator, dtype=np.float64), np.asarray(e.denominator, dtype=np.float64)
        z, scale = (N - e.value * D) / D.mean(), 1.0
    else:
        return math.nan
    Z = np.bincount(codes, z, G)
    return scale * math.sqrt(G / (G - 1) * float(np.sum(Z * Z))) / z.size


def _estimator_table(lr, mask, rewards, codes, specs, level, backend) -> pd.DataFrame:
    from scipy.stats import norm

    q = float(norm.ppf(0.5 + level / 2))
    rows = []
    for spec in specs:
        fn = spec.resolve()
        e = fn(lr, rewards, mask=mask, backend=backend, **spec.kwargs)
        lo, hi = e.ci(level, method="normal")
        row = dict(estimator=spec.label, value=float(e.value), stderr=float(e.stderr), ci_lo=float(lo), ci_hi=float(hi),
                   ess=float(e.ess), ess_fraction=float(e.ess) / e.n, unbiased=bool(fn.unbiased))
        if codes is not None:
            se = _cluster_stderr(e, codes)
            row.update(stderr_cluster=se, ci_cluster_lo=e.value - q * se, ci_cluster_hi=e.value + q * se)
        rows.append(row)
    return pd.DataFrame(rows)


def _histogram(lr, mask, bins: int) -> pd.DataFrame:
    x = lr[mask]
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < 1e-12:
        lo, hi = lo - 1e-6, hi + 1e-6
    counts, edges = np.histogram(x, bins=bins, range=(lo, hi))
    return pd.DataFrame(dict(left=edges[:-1], right=edges[1:], count=counts))


@dataclass(frozen=True, eq=False)
class LogDiagnosis:
    """The report of :func:`diagnose_log` (tables as pandas DataFrames).

    Attributes
    ----------
    n, num_tokens : int
        Responses and real tokens.
    lengths : pandas.DataFrame
        One row: ``length_min``, ``length_median``, ``length_max``, ``empty`` (rows without a token).
    overall : pandas.DataFrame
        One row: every scalar field of :class:`tokis.estimators.Diagnostics`, ``khat_threshold``
        and ``khat_reliability``.
    by_length : pandas.DataFrame
        The same per length bucket (``bucket``, ``length_min``, ``length_max``, ``mean_length``).
    thresholds : pandas.DataFrame
        Per rule of :data:`THRESHOLDS`: ``tokens_outside``, ``sequences_outside``, ``geo_outside``.
    growth : GrowthFit
    variance_by_length : pandas.DataFrame
        Log-weight variance per finer length bucket, next to the fitted line (plot data).
    histogram : pandas.DataFrame
        Counts of the per-token log-ratios (``left``, ``right``, ``count``).
    estimators : pandas.DataFrame or None
        Per estimator: ``value``, ``stderr``, ``ci_lo``, ``ci_hi`` (normal, ``level``), ``ess``,
        ``ess_fraction``, ``unbiased`` and, with groups, ``stderr_cluster``, ``ci_cluster_lo``,
        ``ci_cluster_hi``. None without rewards.
    behavior_mean_reward, behavior_mean_reward_stderr : float
        The sampler's own mean return (no correction); NaN without rewards.
    groups : pandas.DataFrame or None
        Within-group weight diagnostics; None without groups.
    level : float
    notes : tuple of str
    """

    n: int
    num_tokens: int
    lengths: pd.DataFrame
    overall: pd.DataFrame
    by_length: pd.DataFrame
    thresholds: pd.DataFrame
    growth: GrowthFit
    variance_by_length: pd.DataFrame
    histogram: pd.DataFrame
    estimators: pd.DataFrame | None
    behavior_mean_reward: float
    behavior_mean_reward_stderr: float
    groups: pd.DataFrame | None
    level: float
    notes: tuple


def check_options(*, buckets=4, level=0.95, bins=80, estimators=None) -> list:
    """Validate the options of :func:`diagnose_log`; return the parsed estimator configurations."""
    for name, v in (("buckets", buckets), ("bins", bins)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    return parse_estimators(list(est.REGISTRY) if estimators is None else estimators)


def diagnose_log(target_logp, behavior_logp, mask=None, rewards=None, groups=None, *, buckets: int = 4,
                 level: float = 0.95, estimators=None, bins: int = 80, backend: str = "numpy") -> LogDiagnosis:
    r"""How off-policy a batch of sampled responses is, from its per-token log-probabilities.

    Parameters
    ----------
    target_logp, behavior_logp : float (n, T), or a list of n 1-D arrays (ragged rows)
        Log-probabilities of the sampled tokens under the trainer (target :math:`\pi`) and
        the sampler (behaviour :math:`\mu`); the log-ratio is ``target - behavior``.
    mask : (n, T) or ragged like the log-probs, optional
        Nonzero at real tokens (default: every entry of the rows).
    rewards : float (n,) or per-token (n, T), optional
        Enables the estimator table.
    groups : array (n,), optional
        Prompt group of each response: within-group diagnostics and cluster-robust intervals.
    buckets : int
        Number of response-length buckets (about equal counts).
    level : float
        Level of the intervals.
    estimators : list of str, optional
        Estimator specifications (``"clip_tok:c=2"``); default every registered estimator.
    bins : int
        Bins of the log-ratio histogram.
    backend : str
        Estimator backend (default numpy: a log is reduced once, so compiling kernels would
        cost more than it saves).

    Returns
    -------
    LogDiagnosis

    Raises
    ------
    ValueError, TypeError
        Inputs :func:`tokis.analysis._logs_check.assemble` rejects, or bad options.
    """
    specs = check_options(buckets=buckets, level=level, bins=bins, estimators=estimators)
    batch = assemble(target_logp, behavior_logp, mask, rewards, groups,
                     labels=dict(target="target_logp", behavior="behavior_logp", mask="mask", reward="rewards",
                                 group="groups"))
    lr, m, L = batch.log_ratio, batch.mask, batch.lengths
    lw = lr.sum(axis=1)
    overall = _diag_row(lr, m)
    fit = fit_variance_growth(lw, L, level=level, token_chi2=overall["token_chi2"])
    notes = []
    if not fit.fitted:
        notes.append(fit.reason + ".")
    if np.unique(L).size == 1:
        notes.append("one response length: the length buckets reduce to one.")
    empty = int((L == 0).sum())
    if empty:
        notes.append(f"{empty} responses have no real token (weight 1).")
    table, mean_r, se_r = None, math.nan, math.nan
    if batch.rewards is not None:
        table = _estimator_table(lr, m, batch.rewards, batch.groups, specs, level, backend)
        G = batch.rewards.sum(axis=1) if batch.rewards.ndim == 2 else batch.rewards
        mean_r = float(G.mean())
        se_r = float(G.std(ddof=1) / math.sqrt(G.size)) if G.size > 1 else math.nan
    return LogDiagnosis(
        n=batch.n, num_tokens=int(L.sum()),
        lengths=pd.DataFrame([dict(length_min=int(L.min()), length_median=float(np.median(L)), length_max=int(L.max()),
                                   empty=empty)]),
        overall=pd.DataFrame([overall]), by_length=_bucket_table(lr, m, L, buckets), thresholds=_threshold_table(lr, m),
        growth=fit, variance_by_length=_variance_by_length(lw, L, fit), histogram=_histogram(lr, m, bins),
        estimators=table, behavior_mean_reward=mean_r, behavior_mean_reward_stderr=se_r,
        groups=_groups_table(lw, batch.groups) if batch.groups is not None else None, level=float(level),
        notes=tuple(notes))


def diagnose_file(path, *, preset=None, fmt=None, target=None, behavior=None, mask=None, reward=None, group=None,
                  **options) -> LogDiagnosis:
    """:func:`diagnose_log` of a file read by :func:`tokis.analysis._logs.load_log`.

    ``preset``, ``fmt`` and the column names are those of ``load_log``; ``options`` those of
    :func:`diagnose_log` (``buckets``, ``level``, ``estimators``, ``bins``, ``backend``).
    """
    b = load_log(path, preset=preset, fmt=fmt, target=target, behavior=behavior, mask=mask, reward=reward, group=group)
    return diagnose_log(b.target, b.behavior, b.mask, b.rewards, b.groups, **options)
