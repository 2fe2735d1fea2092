"""The ``tokis`` command: ``tokis horizon | divergence | mismatch | growth | gradient | coverage | train | sweep | diagnose``.

Each subcommand wraps the Python function of its public module in :mod:`tokis.analysis`, prints
markdown tables on stdout (the cell counts and timing on stderr), and with ``--out DIR``
writes CSV (every column), LaTeX (the printed columns) and PNG plots. Bad options print one
line ``tokis: error: ...`` and exit with status 2; ``--out`` is checked before any computation.
The first six are defined here; ``train``, ``sweep`` and ``diagnose`` in their own modules
(:data:`PLUGINS`). Only argparse is imported at start-up: ``tokis --help`` answers at once.

Values of snis and wpdis in the ``exact_*`` columns come from the delta method: their rows read
``method = asymptotic`` and a note under the table says so; where the delta method broke
down the values are printed as ``—`` with the flag ``delta!`` (the raw numbers stay in the
CSV, with ``asymptotic_breakdown`` and ``breakdown_reason``), and plots draw delta-method
series dashed, labelled "(asymptotic, delta method)".
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from pathlib import Path

from ._progress import default_mode
from . import _cli_args as A

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tokis`` command (every option documented in ``--help``)."""
    parser = A.Parser(prog="tokis", description="Off-policy importance-sampling estimators for LLM RL, measured "
                     "against exact ground truth on tabular token MDPs. Each command prints markdown tables; "
                     "finished cells are kept in a SQLite store so an interrupted sweep resumes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=A.Parser)
    sub.required = True

    h = sub.add_parser("horizon", help="sweep the horizon T (the flagship)",
                       description="Sweep T = 1, 2, 4, ... at a fixed per-token divergence: exact bias, std, MSE "
                       "and population ESS fraction next to Monte Carlo bias (95 % CI), std, Kish ESS and z-score, "
                       "per estimator; then where each estimator's exact MSE overtakes another's.")
    A.add_family(h, "ngram", "frequency")
    A.add_behavior(h, "--kl 0.05")
    h.add_argument("--horizons", default="1..64", metavar="LIST",
                   help="comma-separated horizons; a..b = powers of two from a to b (default 1..64)")
    A.add_run(h, estimators="seq,pdis,tok,snis,trunc_seq,clip_tok,clip_prod,geo", n=1024, replications=1000)

    d = sub.add_parser("divergence", help="sweep the per-token divergence at fixed T",
                       description="Sweep the per-context KL (or chi2) of the perturbation at a fixed horizon.")
    A.add_family(d, "ngram")
    A.add_behavior(d, "no other transformation; --kl/--chi2 are replaced by the swept values")
    d.add_argument("--kind", default="kl", help="swept divergence: kl or chi2 (default kl)")
    d.add_argument("--values", default="0.001,0.003,0.01,0.03,0.1,0.3", metavar="LIST",
                   help="comma-separated divergences (default 0.001,0.003,0.01,0.03,0.1,0.3)")
    d.add_argument("--horizon", type=int, default=16, metavar="T", help="horizon (default 16)")
    A.add_run(d, estimators="seq,tok,snis,clip_tok,geo,clip_prod", n=1024, replications=500)

    m = sub.add_parser("mismatch", help="compare behaviour models at matched KL",
                       description="Compare behaviour models (perturbation, temperature, top-p, top-k, bf16/fp16 "
                       "rounding), each calibrated to the same per-token sampler KL(mu||pi) under mu.")
    A.add_family(m, "ngram")
    m.add_argument("--models", default="perturb,temperature,top_p,bf16", metavar="LIST",
                   help="comma-separated models: perturb, temperature, top_p, top_k, bf16, fp16 "
                        "(default perturb,temperature,top_p,bf16)")
    m.add_argument("--kl", type=float, default=0.01, help="matched per-token KL(mu||pi) (default 0.01)")
    m.add_argument("--horizon", type=int, default=16, metavar="T", help="horizon (default 16)")
    A.add_run(m, estimators="seq,tok,snis,clip_tok,geo,mask_tok", n=1024, replications=500)

    g = sub.add_parser("growth", help="regress log Var against T, next to the exact rate",
                       description="Fit log E[f^2] (or log Var f) of one estimator against T by OLS (statsmodels) "
                       "with a 95 % CI on the slope, next to the exact per-step growth rate; say whether they agree.")
    A.add_family(g, "iid", "random")
    A.add_behavior(g, "--chi2 0.05")
    g.add_argument("--estimator", default="seq", help="the estimator (default seq)")
    g.add_argument("--horizons", default="2,4,6,8,10,12,14,16,18,20", metavar="LIST",
                   help="comma-separated horizons, at least 3 (default 2,4,...,20)")
    g.add_argument("--quantity", default="second_moment",
                   help="fitted quantity: second_moment (log E[f^2]) or variance (log Var f) (default second_moment)")
    A.add_run(g, estimators=None, n=1024, replications=400)

    gr = sub.add_parser("gradient", help="exact policy gradients of PPO/GRPO-style objectives against grad J",
                        description="Across horizons T and per-token KL(pi_old||pi_theta) of the current policy "
                        "pi_theta = perturb(pi_old, kl), the exact expected gradient of each objective under the "
                        "sampler (mu = pi_old, or a behaviour model of pi_old) next to grad J(pi_theta): cosine, "
                        "relative bias, ascent, variance along grad J, SNR at batch size n, clip probability and "
                        "mass, and tok's state/value mismatch shares; then where each expected gradient stops "
                        "pointing uphill and where SNR falls below 1. Exact only: an objective without an exact "
                        "method at some T is reported with method none.")
    A.add_family(gr, "ngram")
    A.add_behavior(gr, "mu = pi_old; these options make mu a model of pi_old (engine mismatch), the anchor stays "
                      "pi_old")
    sw = gr.add_argument_group("sweep")
    sw.add_argument("--objectives", default="seq,tok,ppo_clip,cispo,gspo", metavar="LIST",
                    help="comma-separated objectives with optional parameters and settings, e.g. "
                         "'tok,ppo_clip:eps_high=0.28,cispo,tok:correction=tis,c=2' (default "
                         "seq,tok,ppo_clip,cispo,gspo)")
    sw.add_argument("--horizons", default="1..64", metavar="LIST",
                    help="comma-separated horizons; a..b = powers of two from a to b (default 1..64)")
    sw.add_argument("--kls", default="0.01,0.05", metavar="LIST",
                    help="per-token KL(pi_old||pi_theta) of the current policy (default 0.01,0.05)")
    sw.add_argument("--theta-seed", type=int, default=1, metavar="S",
                    help="seed of the direction from pi_old to pi_theta (default 1; a behaviour model's "
                         "perturbation uses --mdp-seed)")
    sw.add_argument("--n", type=int, default=256, help="batch size of the signal-to-noise ratio (default 256)")
    sw.add_argument("--max-sequences", type=int, default=200_000, metavar="N",
                    help="largest enumeration for objectives without a dynamic programme, e.g. gspo (default 200000)")
    sw.add_argument("--landscape-horizon", type=int, default=None, metavar="T",
                    help="horizon of the surrogate landscape plot (default: the longest swept horizon at which "
                         "every objective is exact)")
    sw.add_argument("--workers", type=int, default=1, metavar="N", help="local processes (default 1)")
    A.add_scheduler(sw)
    A.add_output(gr, out="write CSV, LaTeX and PNG plots (cosine and SNR against T, surrogate landscape) to DIR")
    gr.set_defaults(replications=2, backend="auto")  # no Monte Carlo here: what the shared A.validate_run reads

    cv = sub.add_parser("coverage", help="real coverage of confidence intervals against exact truth",
                        description="For estimators x interval methods (Estimate.ci: normal, t, bca two-sided; "
                        "bernstein, hoeffding one-sided lower bounds) x horizons, the fraction of R intervals that "
                        "contain the exact target (J(pi) for unbiased estimators, the estimator's own exact mean for "
                        "biased ones, the delta-method mean for ratio estimators: the table says which), with a "
                        "Wilson 95 % interval, the mean width (two-sided) or mean distance below the target "
                        "(lower bounds), and the miss rates on each side.")
    A.add_family(cv, "ngram")
    A.add_behavior(cv, "--kl 0.1")
    cs = cv.add_argument_group("coverage")
    cs.add_argument("--horizons", default="2,4,8,16", metavar="LIST",
                    help="comma-separated horizons; a..b = powers of two from a to b (default 2,4,8,16)")
    cs.add_argument("--methods", default="normal,t,bca,bernstein,hoeffding", metavar="LIST",
                    help="interval methods (default normal,t,bca,bernstein,hoeffding)")
    cs.add_argument("--level", type=float, default=0.95, help="nominal level (default 0.95)")
    cs.add_argument("--resamples", type=int, default=999, metavar="B",
                    help="bootstrap resamples of bca (default 999, fewer than Estimate.ci's 9999 for speed)")
    A.add_run(cv, estimators="seq,pdis,tok,snis,clip_tok,clip_prod", n=64, replications=1000)
    for mod in _plugins():
        mod.add_parser(sub).set_defaults(_run=mod.run)
    return parser


def _cmd_horizon(a) -> int:
    from ._common import display_table, parse_horizons
    from ._config import parse_estimators
    from ._output import to_markdown, write_tables
    from ._horizon import DEFAULT_BEHAVIOR, horizon, overtakes

    fam, beh = A.family(a), A.behavior(a, DEFAULT_BEHAVIOR)
    specs, Ts = parse_estimators(a.estimators), parse_horizons(a.horizons)
    t0 = time.perf_counter()
    table = horizon(fam, beh, estimators=specs, horizons=Ts, **A.run_kwargs(a))
    A.report_counts(table, t0)
    shown = display_table(table, ["T"])
    ov = overtakes(table)
    A.say(f"## horizon sweep: {fam.label}, mu: {beh.label}, n={a.n}, R={a.replications}, seed={a.seed}\n")
    A.say(to_markdown(shown, digits=a.digits))
    good = ov.loc[ov["stays_ahead"].astype(bool)].drop(columns=["stays_ahead"])
    A.say("\n## where exact MSE overtakes for good (estimator beats the other from T on, at every T compared up to "
         "until; asymptotic: a delta-method MSE is compared, never one that broke down; all crossings in the CSV)\n")
    A.say(to_markdown(good, digits=a.digits) if len(good) else "(no lasting overtake in this range)")
    if a.out:
        from ._plots import plot_sweep

        write_tables({"horizon": (table, shown), "horizon_overtakes": ov}, a.out, digits=a.digits)
        plot_sweep(table, "T", a.out, prefix="horizon", title=f"{fam.label}, {beh.label}")
    return 0


def _cmd_divergence(a) -> int:
    from ._common import display_table, parse_floats
    from ._config import Behavior, parse_estimators
    from ._output import to_markdown, write_tables
    from ._divergence import divergence

    fam = A.family(a)
    beh = A.behavior(a, Behavior())
    specs = parse_estimators(a.estimators)
    vals = parse_floats(a.values, "values")
    for v in vals:
        if v < 0:
            raise ValueError(f"{a.kind} must be >= 0, got {v}")
    t0 = time.perf_counter()
    table = divergence(fam, beh, kind=a.kind, values=vals, horizon=a.horizon, estimators=specs, **A.run_kwargs(a))
    A.report_counts(table, t0)
    kind = table.attrs.get("kind", a.kind)
    shown = display_table(table, [kind])
    A.say(f"## divergence sweep ({kind}): {fam.label}, T={a.horizon}, n={a.n}, R={a.replications}, seed={a.seed}\n")
    A.say(to_markdown(shown, digits=a.digits))
    if a.out:
        from ._plots import plot_sweep

        write_tables({"divergence": (table, shown)}, a.out, digits=a.digits)
        plot_sweep(table, kind, a.out, prefix="divergence", xlabel=f"per-context {kind}", title=fam.label)
    return 0


def _cmd_mismatch(a) -> int:
    from ._common import display_table
    from ._config import parse_estimators
    from ._output import to_markdown, write_tables
    from ._mismatch import mismatch

    fam = A.family(a)
    specs = parse_estimators(a.estimators)
    t0 = time.perf_counter()
    table = mismatch(fam, models=a.models, kl=a.kl, horizon=a.horizon, estimators=specs, **A.run_kwargs(a))
    A.report_counts(table, t0)
    shown = display_table(table, ["model", "knob", "token_kl_mu", "token_kl", "missing_mass"])
    A.say(f"## behaviour models at sampler KL(mu||pi) = {a.kl:g} per token: {fam.label}, T={a.horizon}, n={a.n}, "
         f"R={a.replications}, seed={a.seed}\n")
    A.say(to_markdown(shown, digits=a.digits))
    if a.out:
        from ._plots import plot_models

        write_tables({"mismatch": (table, shown)}, a.out, digits=a.digits)
        plot_models(table, a.out, prefix="mismatch")
    return 0


def _cmd_growth(a) -> int:
    import pandas as pd

    from ._common import blank_breakdowns, exact_notes, parse_horizons
    from ._config import parse_estimator
    from ._harness import breakdown_mask
    from ._output import to_markdown, write_tables
    from ._growth import DEFAULT_BEHAVIOR, growth

    fam, beh = A.family(a), A.behavior(a, DEFAULT_BEHAVIOR)
    spec = parse_estimator(a.estimator)
    Ts = parse_horizons(a.horizons)
    t0 = time.perf_counter()
    table = growth(fam, beh, estimator=spec, horizons=Ts, quantity=a.quantity, **A.run_kwargs(a))
    A.report_counts(table, t0)
    fit = table.attrs["fit"]
    cols = ["T", "method", "exact_log_second_moment", "mc_log_second_moment", "exact_log_variance",
            "mc_log_variance", "exact_std", "mc_std", "std_underestimated"]
    shown = blank_breakdowns(table[cols], ["exact_log_second_moment", "exact_log_variance", "exact_std"],
                             breakdown_mask(table))
    shown.attrs["notes"] = exact_notes(table)
    rate = "asymptotic (delta-method) rate" if (table["method"] == "asymptotic").any() else "exact rate"
    q = fit["quantity"]
    summary = pd.DataFrame([dict(estimator=fit["estimator"], quantity=q, mc_slope=fit["mc_slope"],
                                 ci_lo=fit["mc_slope_lo"], ci_hi=fit["mc_slope_hi"], exact_rate=fit["exact_rate"],
                                 chi2_rate=fit["chi2_rate"], agree=fit["agree"])])
    A.say(f"## growth of log {'E[f^2]' if q == 'second_moment' else 'Var f'} with T: {spec.label}, {fam.label}, "
         f"mu: {beh.label}, n={a.n}, R={a.replications}, seed={a.seed}\n")
    A.say(to_markdown(shown, digits=a.digits))
    A.say("\n## OLS slope (95% CI) against the exact per-step rate\n")
    A.say(to_markdown(summary, digits=a.digits))
    verdict = "inside" if fit["agree"] else "outside"
    A.say(f"\n{rate} {fit['exact_rate']:.{a.digits}g} is {verdict} the 95% CI "
         f"[{fit['mc_slope_lo']:.{a.digits}g}, {fit['mc_slope_hi']:.{a.digits}g}]: "
         f"{'they agree' if fit['agree'] else 'they disagree'}")
    if not math.isnan(fit["chi2_rate"]):
        A.say(f"closed form log(1+chi2) = {fit['chi2_rate']:.{a.digits}g}")
    if a.out:
        from ._plots import plot_growth

        write_tables({"growth": (table, shown), "growth_fit": summary}, a.out, digits=a.digits)
        plot_growth(table, fit, a.out, prefix="growth", column=f"log_{q}")
    return 0


def _cmd_gradient(a) -> int:
    from ._common import parse_floats, parse_horizons
    from ._output import BLANK, to_markdown, write_tables
    from ._gradient import (DEFAULT_BEHAVIOR, display_gradient_table, gradient_sweep, landscape, parse_objectives,
                            turning_points)

    fam, beh = A.family(a), A.behavior(a, DEFAULT_BEHAVIOR)
    objs, Ts = parse_objectives(a.objectives), parse_horizons(a.horizons)
    kls = parse_floats(a.kls, "kls")
    if a.max_sequences < 1:
        raise ValueError(f"--max-sequences must be >= 1, got {a.max_sequences}")
    if a.landscape_horizon is not None and a.landscape_horizon < 1:
        raise ValueError(f"--landscape-horizon must be >= 1, got {a.landscape_horizon}")
    progress = default_mode(a.progress)
    t0 = time.perf_counter()
    table = gradient_sweep(fam, beh, objectives=objs, horizons=Ts, kls=kls, n=a.n, theta_seed=a.theta_seed,
                           max_sequences=a.max_sequences, workers=a.workers, store=A.store(a), progress=progress,
                           scheduler=a.scheduler)
    A.report_counts(table, t0)
    shown = display_gradient_table(table)
    turns = turning_points(table)
    sampler = "pi_old" if beh.label == "mu=pi" else f"{beh.label} applied to pi_old"
    config = (f"{fam.label}, pi_theta = perturb(pi_old, kl) (theta seed {a.theta_seed}), mu: {sampler}, "
              f"anchor pi_old")
    A.say(f"## exact policy gradients: {config}, n={a.n}\n")
    A.say(to_markdown(shown, digits=a.digits))
    A.say(f"\n## where the expected gradient stops pointing uphill (ascent < 0) and where the batch gradient drowns "
         f"(|snr| < 1 at n={a.n})\n")
    turns_shown = turns.astype(object).where(turns.notna(), BLANK)
    turns_shown.attrs["notes"] = [f"Note: {BLANK} marks an event that does not happen at the horizons swept "
                                  f"(T = {min(Ts)}..{max(Ts)}) with an exact value."]
    A.say(to_markdown(turns_shown, digits=a.digits))
    if a.out:
        from ._panel_plots import plot_gradient, plot_landscape

        write_tables({"gradient": (table, shown), "gradient_turning_points": (turns, turns_shown)}, a.out,
                     digits=a.digits)
        mu_text = "μ = π_old" if beh.label == "mu=pi" else f"μ = {beh.label} applied to π_old"
        theta_text = f"π_θ = perturb(π_old, kl), θ seed {a.theta_seed}"
        plot_gradient(table, a.out, prefix="gradient", title=f"{fam.label}; {theta_text}; {mu_text}; anchor π_old")
        exact_T = [T for T in Ts if not (table.loc[table["T"] == T, "method"] == "none").any()]
        T_land = a.landscape_horizon or (max(exact_T) if exact_T else min(Ts))
        curves = landscape(fam, beh, objectives=objs, horizon=T_land, max_sequences=a.max_sequences)
        curves.to_csv(Path(a.out) / "gradient_landscape.csv", index=False)
        plot_landscape(curves, a.out, prefix="gradient", title=f"{fam.label}; {mu_text}; anchor π_old")
    return 0


def _cmd_coverage(a) -> int:
    from ._common import parse_horizons
    from ._config import parse_estimators
    from ._output import to_markdown, write_tables
    from ._coverage import DEFAULT_BEHAVIOR, coverage, display_coverage_table, parse_methods

    fam, beh = A.family(a), A.behavior(a, DEFAULT_BEHAVIOR)
    specs, Ts, methods = parse_estimators(a.estimators), parse_horizons(a.horizons), parse_methods(a.methods)
    if not 0.0 < a.level < 1.0:
        raise ValueError(f"--level must lie in (0, 1), got {a.level}")
    if a.resamples < 2:
        raise ValueError(f"--resamples must be >= 2, got {a.resamples}")
    if a.n < 2:
        raise ValueError(f"--n must be >= 2 for an interval, got {a.n}")
    t0 = time.perf_counter()
    table = coverage(fam, beh, estimators=specs, methods=methods, horizons=Ts, level=a.level, n_resamples=a.resamples,
                     **A.run_kwargs(a))
    A.report_counts(table, t0)
    shown = display_coverage_table(table, digits=min(a.digits, 3))
    A.say(f"## interval coverage: {fam.label}, mu: {beh.label}, n={a.n}, R={a.replications}, level={a.level:g}, "
         f"seed={a.seed}, bca resamples={a.resamples}\n")
    A.say(to_markdown(shown, digits=a.digits))
    if a.out:
        from ._panel_plots import plot_coverage

        write_tables({"coverage": (table, shown)}, a.out, digits=a.digits)
        plot_coverage(table, a.out, prefix="coverage", title=f"{fam.label}, {beh.label}, n={a.n}, R={a.replications}")
    return 0


_COMMANDS = {"horizon": _cmd_horizon, "divergence": _cmd_divergence, "mismatch": _cmd_mismatch,
             "growth": _cmd_growth, "gradient": _cmd_gradient, "coverage": _cmd_coverage}

#: Subcommands defined in their own modules: each has ``add_parser(subparsers)`` and ``run(args) -> int``
#: (see :mod:`tokis.analysis._cli_args`), registered in this order after the ones above.
PLUGINS = ("_sweep_cli", "_train_cli", "_diagnose_cli")


def _plugins():
    return [importlib.import_module(f"tokis.analysis.{name}") for name in PLUGINS]


def _one_line(err) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def main(argv=None) -> int:
    """Entry point of the ``tokis`` console script.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 on a bad option (one line ``tokis: error: ...`` on stderr), 130 when
        interrupted (finished cells are already stored).
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except A.UsageError as err:
        sys.stderr.write(f"tokis: error: {_one_line(err)}\n")
        return 2
    except SystemExit as ex:  # --help
        return int(ex.code or 0)
    try:
        A.validate_run(args)
        if getattr(args, "out", None):
            from ._outdir import check_out_dir

            check_out_dir(args.out)  # before any computation: a bad --out fails in a second
        run = getattr(args, "_run", None) or _COMMANDS[args.command]
        return run(args)
    except (ValueError, TypeError) as err:  # bad option values (the configurations validate them)
        sys.stderr.write(f"tokis: error: {_one_line(err)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("tokis: interrupted; finished cells are in the store\n")
        return 130
    except BrokenPipeError:  # e.g. piped into head
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
