"""What a tuning budget buys: the expected best validation score after k trials.

Dodge et al. 2019, "Show Your Work: Improved Reporting of Experimental Results"
(https://arxiv.org/abs/1909.03004), section 3: with the n trials' scores sorted,
v(1) <= ... <= v(n), the expected maximum of k trials drawn from their empirical
distribution is

    E[max of k] = sum_i v(i) * ((i/n)^k - ((i-1)/n)^k),

k = 1 the mean and large k the best score. The band comes from resampling the n
scores with replacement (a percentile bootstrap, seeded: the figure is part of
the record).
"""

import numpy as np


def expected_max(scores, budgets):
    """E[max of k scores] for each k in `budgets`, k >= 1 (k may exceed the number of scores)."""
    v = np.sort(np.asarray(scores, dtype=float))
    n = len(v)
    if n == 0:
        raise ValueError("expected_max needs at least one score")
    i = np.arange(1, n + 1)
    return np.array([float(np.sum(v * ((i / n) ** k - ((i - 1) / n) ** k))) for k in budgets])


def expected_max_band(scores, budgets, confidence=0.95, resamples=2000, seed=0):
    """(low, high) arrays: the percentile bootstrap interval of expected_max at each budget."""
    scores = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    draws = np.array(
        [expected_max(rng.choice(scores, size=len(scores), replace=True), budgets) for _ in range(resamples)]
    )
    tail = (1 - confidence) / 2 * 100
    return np.percentile(draws, tail, axis=0), np.percentile(draws, 100 - tail, axis=0)


def ranking_changes(curves):
    """{name: expected-max curve} -> [(k, order)] at each budget k (1-based) where the order of the names
    from best to worst differs from the one at k - 1; the first entry is the order at k = 1."""
    length = len(next(iter(curves.values())))
    changes, previous = [], None
    for k in range(length):
        order = tuple(sorted(curves, key=lambda name: (-curves[name][k], name)))
        if order != previous:
            changes.append((k + 1, order))
            previous = order
    return changes
