"""Coverage of `aam.evaluation.stats` intervals on simulated grouped data (a benchmark, not a test).

Each simulated study has subjects with several samples each; a subject's samples share a random effect, so
samples of one subject are correlated, as in the held-out tasks. Two models' absolute errors differ by a known
amount in the population. For many simulated studies, the 95% interval of the paired MAE difference is computed
by bootstrap over subjects (what the harness does) and, for contrast, over samples (what ignoring the grouping
gives); coverage is the share of studies whose interval holds the true difference. The same for one model's
accuracy.

Run: ``python -m benchmarks.stats_coverage`` (writes ``benchmarks/results/stats_coverage.md``; about a minute).
"""
import argparse
import os
import time

import numpy as np

from aam.evaluation import stats as S

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "results", "stats_coverage.md")


def simulate(rng, subjects, per_subject, gap, spread):
    """One study: (true values, predictions of model A and B, subject per sample). Model B's absolute errors exceed
    A's by `gap` on average; each subject shifts both models' errors by a shared random amount (`spread`)."""
    n = subjects * per_subject
    groups = np.repeat(np.arange(subjects), per_subject)
    subject_effect = rng.gamma(2.0, spread, size=subjects)[groups]          # correlated within a subject
    err_a = subject_effect + rng.exponential(1.0, size=n)
    err_b = err_a + gap + rng.normal(0, 0.5, size=n) + rng.normal(0, 0.5, size=subjects)[groups]
    truth = rng.normal(size=n)
    sign = rng.choice([-1.0, 1.0], size=n)
    return truth, truth + sign * err_a, truth + sign * err_b, groups


def classification(rng, subjects, per_subject, accuracy, spread):
    """One study of one classifier whose per-subject accuracy varies around `accuracy` (Beta-distributed)."""
    groups = np.repeat(np.arange(subjects), per_subject)
    a = accuracy * spread
    p_subject = rng.beta(a, spread - a, size=subjects)[groups]
    right = rng.uniform(size=len(groups)) < p_subject
    truth = rng.choice(["x", "y"], size=len(groups))
    other = np.where(truth == "x", "y", "x")
    return S.Scored(truth, np.where(right, truth, other), classes=("x", "y")), groups


def coverage(studies, subjects, per_subject, resamples, seed):
    rng = np.random.default_rng(seed)
    gap = 0.3
    hits = {"mae difference, over subjects": 0, "mae difference, over samples": 0,
            "accuracy, over subjects": 0, "accuracy, over samples": 0}
    widths = {k: [] for k in hits}
    for i in range(studies):
        truth, pa, pb, groups = simulate(rng, subjects, per_subject, gap, spread=1.0)
        a, b = S.Scored(truth, pa), S.Scored(truth, pb)
        for label, g in (("over subjects", groups), ("over samples", None)):
            d = S.compare("mae", a, b, groups=g, n_resamples=resamples, seed=i).difference
            key = f"mae difference, {label}"
            hits[key] += d.contains(-gap)
            widths[key].append(d.high - d.low)
        scored, groups = classification(rng, subjects, per_subject, 0.75, spread=6.0)
        for label, g in (("over subjects", groups), ("over samples", None)):
            iv = S.metric_interval("accuracy", scored, groups=g, n_resamples=resamples, seed=i)
            key = f"accuracy, {label}"
            hits[key] += iv.contains(0.75)
            widths[key].append(iv.high - iv.low)
    return {k: (hits[k] / studies, float(np.mean(widths[k]))) for k in hits}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.stats_coverage", description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=400, help="simulated studies per setting (default 400)")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per interval (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    lines = ["# Coverage of the held-out intervals (simulated grouped data)", "",
             f"`python -m benchmarks.stats_coverage --studies {args.studies} --resamples {args.resamples} --seed "
             f"{args.seed}` (the module's docstring says what is simulated). Nominal coverage 95%: the share of "
             "simulated studies whose interval holds the true value. The harness resamples subjects; resampling "
             "samples ignores that a subject's samples move together.", "",
             "| subjects x samples each | interval | coverage | mean width |", "|---|---|---|---|"]
    for subjects, per_subject in ((24, 20), (40, 5), (100, 1)):
        for key, (cov, width) in coverage(args.studies, subjects, per_subject, args.resamples, args.seed).items():
            lines.append(f"| {subjects} x {per_subject} | {key} | {cov:.1%} | {width:.3f} |")
    lines += ["", f"Took {time.perf_counter() - t0:.0f} s."]
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
