"""A variant's mean over its training seeds with Student's t interval: stage evaluate's one statistic.

Kept apart from stats.py (the tests between variants) so that evaluate imports
scipy.special alone: after torch, stats.py's scipy.stats and statsmodels take
0.7 s of CPU to import, scipy.special 0.15 s (quiet, AMD EPYC, 2026-12-06), of
the 2.9 s a shrunk evaluate process spends.
scipy.stats.t.interval is this same arithmetic (its ppf is scipy.special.stdtrit
times the scale plus the location); tests/test_stats.py compares the two bit for bit.
"""

import numpy as np
from scipy.special import stdtrit


def summary(values, confidence, bounds=(-np.inf, np.inf)):
    """{n, mean, std, ci_low, ci_high} of a sample; std and the interval are None for one value.

    The t interval is cut to `bounds`, what the quantity can be (an accuracy
    in [0, 1], a loss >= 0): with two seeds it can reach far past them.
    """
    x = np.asarray(values, dtype=float)
    n, mean = len(x), float(x.mean())
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci_low": None, "ci_high": None}
    std = float(x.std(ddof=1))
    if std == 0:  # every seed agrees: the interval is the point (a t interval of scale 0 is undefined)
        return {"n": n, "mean": mean, "std": 0.0, "ci_low": mean, "ci_high": mean}
    scale = std / np.sqrt(n)
    low = stdtrit(n - 1, (1.0 - confidence) / 2) * scale + mean
    high = stdtrit(n - 1, (1.0 + confidence) / 2) * scale + mean
    low, high = max(float(low), bounds[0]), min(float(high), bounds[1])
    return {"n": n, "mean": mean, "std": std, "ci_low": low, "ci_high": high}
