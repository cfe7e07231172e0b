"""Statistics over training seeds: the tests between variants.

Each seed is one independent training run, so a variant's accuracies are a
small sample: its interval is Student's t (n - 1 degrees of freedom; interval.py), and two
variants are compared with Welch's t-test, which does not assume that their
seed-to-seed spreads are equal (batch norm's is often smaller). Comparing
several variants with one baseline is several tests at once: Holm's step-down
correction keeps the chance of any false "better"/"worse" at alpha, and is
uniformly more powerful than Bonferroni's. "No difference shown" is not
"no difference": equivalence within a margin is its own test (two one-sided
tests, TOST; Schuirmann 1987), and what neither decides gets the number of
seeds that would (statistical power, at the observed spreads).
https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.ttest_ind.html
https://www.statsmodels.org/stable/generated/statsmodels.stats.weightstats.ttost_ind.html
"""

import gc
import warnings

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_ind


def welch(a, b, confidence):
    """mean(a) - mean(b) with its interval and Welch's two-sided p-value.

    {diff, ci_low, ci_high, p}; the interval and p are None when either side
    has one value or neither side has any spread (the test is undefined).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    none = {"diff": diff, "ci_low": None, "ci_high": None, "p": None}
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return none
    with warnings.catch_warnings():
        # one side's seeds all equal (accuracies are multiples of 1/10,000: it happens)
        # has a variance of exactly 0, and the test is still defined by the other side;
        # scipy's "precision loss ... nearly identical" warning is about rounding, not this
        if a.std() == 0 or b.std() == 0:
            warnings.filterwarnings("ignore", "Precision loss occurred in moment calculation", RuntimeWarning)
        result = stats.ttest_ind(a, b, equal_var=False)
    ci = result.confidence_interval(confidence)
    return {"diff": diff, "ci_low": float(ci.low), "ci_high": float(ci.high), "p": float(result.pvalue)}


def holm(pvalues):
    """Holm-adjusted p-values, in the order given; None stays None (statsmodels' multipletests, method "holm":
    sorted ascending, the i-th smallest (0-based) of m times m - i, a running maximum, capped at 1)."""
    present = [i for i, p in enumerate(pvalues) if p is not None]
    adjusted = list(pvalues)
    if present:
        # multipletests runs gc.collect() on every call (statsmodels 0.15, stats/multitest.py), which walks every
        # object of the process: 0.3 s a call in a test process holding torch. Frozen objects are not walked.
        gc.freeze()
        try:
            corrected = multipletests([pvalues[i] for i in present], method="holm")[1]
        finally:
            gc.unfreeze()
        for i, value in zip(present, corrected, strict=True):
            adjusted[i] = float(value)
    return adjusted


def holm_levels(pvalues, alpha):
    """Per test, the alpha of the interval that agrees with Holm's decision; None stays None.

    Holm compares the i-th smallest p (0-based) of m with alpha / (m - i) and
    stops at the first that fails. An interval at that test's own level,
    1 - alpha / (m - i), excludes 0 exactly when its p passes; for the tests
    after the stop, the level of the test that failed, so their intervals
    include 0 as their verdicts say. Verdict and interval never disagree.
    """
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m, levels, stopped = len(present), [None] * len(pvalues), None
    for rank, (p, i) in enumerate(present):
        if stopped is None and p >= alpha / (m - rank):
            stopped = rank
        levels[i] = alpha / (m - (rank if stopped is None else stopped))
    return levels


def verdict(diff, p_difference, p_equivalence, alpha):
    """'better', 'worse', 'equivalent' or 'undecided' from the Holm-adjusted p-values of both families."""
    if p_difference is None and p_equivalence is None:
        return "no test (needs 2+ seeds with spread)"
    if p_difference is not None and p_difference < alpha:
        return "better" if diff > 0 else "worse"
    if p_equivalence is not None and p_equivalence < alpha:
        return "equivalent"
    return "undecided"


def tost(a, b, margin):
    """Two one-sided Welch tests of |mean(a) - mean(b)| < margin: the larger of their p-values, or None.

    statsmodels' ttost_ind (usevar="unequal"): equivalence is shown when both
    "diff <= -margin" and "diff >= +margin" are rejected. None when the test is
    undefined, as for welch().
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return None
    with warnings.catch_warnings():  # one side without spread: see welch()
        warnings.filterwarnings("ignore", "Precision loss occurred in moment calculation", RuntimeWarning)
        p, _, _ = ttost_ind(a, b, -margin, margin, usevar="unequal")
    return float(p)


# Gauss-Legendre nodes per seed spread for the power integrals: 48 x 48 agreed with 400 x 400 within 2e-5 (from 3
# to 500 seeds, sd ratios up to 100) in 3 ms a power, against 140 ms; and with simulated Welch tests within
# their noise (tests/test_stats.py).
POWER_NODES = 48


def _welch_at(sd_a, sd_b, n):
    """The sampling law of Welch's statistic at n seeds per side, on a grid over both sides' sample spreads.

    Returns (weights, se, df, true_se): each side's sample variance is its true one times chi2(n - 1) / (n - 1)
    (normal seeds), taken at POWER_NODES Gauss-Legendre quantiles each; at every pair, the standard error
    Welch's test estimates and its Welch-Satterthwaite degrees of freedom. The difference of the means is
    normal with true_se, independent of both spreads: a power is the probability of passing given the
    spreads, averaged with `weights`.
    """
    nodes, weights = np.polynomial.legendre.leggauss(POWER_NODES)
    quantile = stats.chi2.ppf((nodes + 1) / 2, n - 1) / (n - 1)
    var_a, var_b = sd_a**2 * quantile[:, None], sd_b**2 * quantile[None, :]
    se = np.sqrt((var_a + var_b) / n)
    df = (n - 1) * (var_a + var_b) ** 2 / (var_a**2 + var_b**2)
    return np.outer(weights, weights) / 4, se, df, np.sqrt((sd_a**2 + sd_b**2) / n)


def welch_power(diff, sd_a, sd_b, n, alpha):
    """Power of Welch's two-sided t-test at n seeds per side, true difference `diff` and per-seed sds sd_a, sd_b.

    Exact, the test the verdict runs: given both sample spreads it rejects when |d| > t(df) * se, with d
    normal; that probability averaged over the spreads' chi-squares (_welch_at). No noncentral t: its
    Welch-Satterthwaite approximation was 0.066 off a simulation at 4 seeds when one side's sd is a third
    of the other's, and scipy's noncentral t returned NaN for large effects at few degrees of freedom.
    """
    weights, se, df, true_se = _welch_at(sd_a, sd_b, n)
    t = stats.t.ppf(1 - alpha / 2, df)
    passes = stats.norm.cdf((abs(diff) - t * se) / true_se) + stats.norm.cdf((-abs(diff) - t * se) / true_se)
    return float(min(1.0, np.sum(weights * passes)))


def tost_power(diff, sd_a, sd_b, n, margin, alpha):
    """Power of Welch's TOST (|diff| < margin) at n seeds per side, true difference `diff`, per-seed sds sd_a, sd_b.

    Exact as welch_power: given both spreads, TOST passes when -margin + t se < d < margin - t se (t at
    1 - alpha, Welch's degrees of freedom), a normal probability (Owen 1965 for pooled variances), averaged
    over the spreads' chi-squares.
    """
    weights, se, df, true_se = _welch_at(sd_a, sd_b, n)
    t = stats.t.ppf(1 - alpha, df)
    upper, lower = (margin - t * se - diff) / true_se, (-margin + t * se - diff) / true_se
    passes = np.clip(stats.norm.cdf(upper) - stats.norm.cdf(lower), 0.0, None)
    return float(min(1.0, np.sum(weights * passes)))


def seeds_to_decide(a, b, margin, alpha, power, cap=1000):
    """Seeds per variant that would decide a comparison with `power`, if the observed difference and spreads hold.

    Outside the margin (|diff| >= margin) the decision is a difference: the
    smallest n at which Welch's t-test (welch_power) reaches `power`. Inside
    it, equivalence: the smallest n whose TOST power (tost_power) reaches
    `power`. Both are the tests the verdict runs, at each side's own observed
    spread (one variant's seeds often agree far more closely than the
    other's). Both powers grow with n, so both are bisected over whole seed
    counts. Returns None when neither side has spread, and cap + 1 when more
    than `cap` seeds would be needed (a difference too close to the margin to
    decide).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    sd_a, sd_b = (float(x.std(ddof=1)) if len(x) > 1 else 0.0 for x in (a, b))
    if sd_a == 0 and sd_b == 0:
        return None
    if abs(diff) >= margin:

        def power_at(n):
            return welch_power(diff, sd_a, sd_b, n, alpha)
    else:

        def power_at(n):
            return tost_power(diff, sd_a, sd_b, n, margin, alpha)

    if power_at(cap) < power:
        return cap + 1
    low, high = 1, cap  # power_at(high) >= power; n = 1 has no spread to test with
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if power_at(middle) >= power else (middle, high)
    return high


def image_noise_se(correct_a, correct_b, draws=2000, seed=0):
    """The standard error that the finite test set adds to mean accuracy a - b: a paired bootstrap over images.

    correct_a, correct_b: bool arrays [seeds, images], each seed's hits on the
    same test images. Each draw resamples the images (the same draw for both
    sides: paired, so what both get right or wrong cancels) and takes the
    difference of the seed means; the SD of the draws is the test set's part.
    Seeded: the same inputs give the same number.
    """
    per_image = np.asarray(correct_a, dtype=float).mean(0) - np.asarray(correct_b, dtype=float).mean(0)
    rng = np.random.default_rng(seed)
    chunks = [min(200, draws - start) for start in range(0, draws, 200)]
    means = [per_image[rng.integers(0, len(per_image), (k, len(per_image)))].mean(1) for k in chunks]
    return float(np.concatenate(means).std(ddof=1))


def with_test_set(a, b, test_se, confidence):
    """The interval of mean(a) - mean(b) over seeds *and* test images: (low, high).

    Two independent sources (Bouthillier et al. 2021; Jordan 2023): the seeds'
    training noise, Welch's standard error, and the test set's sampling noise,
    image_noise_se(); their variances add. The t quantile keeps Welch's degrees
    of freedom (conservative: Satterthwaite would add some for the test-set
    part, whose SE is known), so this interval is never narrower than Welch's.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    parts = [np.var(x, ddof=1) / len(x) if len(x) > 1 else 0.0 for x in (a, b)]
    seed_var = sum(parts)
    total = np.sqrt(seed_var + test_se**2)
    if total == 0:
        return diff, diff
    df = seed_var**2 / sum(p**2 / (len(x) - 1) for p, x in zip(parts, (a, b)) if p > 0) if seed_var > 0 else np.inf
    half = stats.t.ppf((1 + confidence) / 2, df) * total
    return diff - float(half), diff + float(half)
