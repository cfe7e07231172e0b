"""Statistics over training seeds: intervals per variant, tests between variants.

Each seed is one independent training run, so a variant's accuracies are a
small sample: the interval is Student's t (n - 1 degrees of freedom), and two
variants are compared with Welch's t-test, which does not assume that their
seed-to-seed spreads are equal (batch norm's is often smaller). Comparing
several variants with one baseline is several tests at once: Holm's step-down
correction keeps the chance of any false "better"/"worse" at alpha, and is
uniformly more powerful than Bonferroni's.
https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.ttest_ind.html
"""

import warnings

import numpy as np
from scipy import stats


def summary(values, confidence):
    """{n, mean, std, ci_low, ci_high} of a sample; std and the interval are None for one value."""
    x = np.asarray(values, dtype=float)
    n, mean = len(x), float(x.mean())
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci_low": None, "ci_high": None}
    std = float(x.std(ddof=1))
    if std == 0:  # every seed agrees: the interval is the point (t.interval wants a scale > 0)
        return {"n": n, "mean": mean, "std": 0.0, "ci_low": mean, "ci_high": mean}
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=std / np.sqrt(n))
    return {"n": n, "mean": mean, "std": std, "ci_low": float(low), "ci_high": float(high)}


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
    """Holm-adjusted p-values, in the order given; None stays None.

    Sorted ascending, the i-th smallest (0-based) of m is multiplied by m - i,
    and the adjusted values are made non-decreasing (a running maximum), capped at 1.
    """
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    m, adjusted, running = len(present), list(pvalues), 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
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


def verdict(diff, p_adjusted, alpha):
    """'better', 'worse', or why neither, for a difference with its Holm-adjusted p-value."""
    if p_adjusted is None:
        return "no test (needs 2+ seeds with spread)"
    if p_adjusted < alpha:
        return "better" if diff > 0 else "worse"
    return "not distinguishable from seed noise"
