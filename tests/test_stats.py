"""Statistics over seeds against hand-computed values, and the report's words built from them."""

import math
import re
import statistics
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from pipeline.evaluate import aggregate
from pipeline.interval import summary
from pipeline.params import Report
from pipeline.report import comparisons, report_text, still_improving, table
from pipeline.stats import (
    holm,
    holm_levels,
    image_noise_se,
    seeds_to_decide,
    tost,
    tost_power,
    verdict,
    welch,
    welch_power,
    with_test_set,
)

SETTINGS = Report(baseline="vanilla", confidence=0.95, still_improving=0.005, margin=0.003, power=0.8, looks=[3])


def compare(results, baseline="vanilla", confidence=0.95, margin=0.003, looks=1, draws=2000):
    return comparisons(results, baseline, confidence, margin, 0.8, looks, draws)


def text_of(results, settings=SETTINGS, names=("test_accuracy",)):
    looks = len(settings.looks)
    compared = comparisons(results, settings.baseline, settings.confidence, settings.margin, settings.power, looks)
    return report_text(results, settings, compared, Path("plots"), list(names))


def test_summary_by_hand():
    s = summary([0.90, 0.91, 0.92], 0.95)
    # mean 0.91, sample std 0.01; t(0.975, df=2) = 4.3027 from any t-table
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.91) and s["std"] == pytest.approx(0.01)
    half = 4.302652729911275 * 0.01 / math.sqrt(3)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((0.91 - half, 0.91 + half))


def test_summary_is_scipys_t_interval_bit_for_bit():
    """interval.py computes the interval without importing scipy.stats; the same bits as t.interval, which the
    committed metrics were computed with."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(2, 40))
        values, confidence = rng.normal(rng.uniform(0.5, 1), rng.uniform(1e-5, 0.1), n), rng.uniform(0.5, 0.999)
        mean, std = float(values.mean()), float(values.std(ddof=1))
        low, high = scipy_stats.t.interval(confidence, n - 1, loc=mean, scale=std / np.sqrt(n))
        s = summary(values, confidence)
        assert (s["ci_low"], s["ci_high"]) == (float(low), float(high))


def test_summary_of_one_seed_has_no_spread_and_equal_seeds_a_point():
    assert summary([0.9], 0.95) == {"n": 1, "mean": 0.9, "std": None, "ci_low": None, "ci_high": None}
    same = summary([0.9, 0.9], 0.95)
    assert same["std"] == 0.0 and same["ci_low"] == same["ci_high"] == pytest.approx(0.9)


def test_welch_by_hand():
    a, b = [0.92, 0.93, 0.925], [0.90, 0.91, 0.905]
    # both variances 2.5e-5: se = sqrt(2 * 2.5e-5 / 3), Welch-Satterthwaite df = 4 exactly
    se = math.sqrt(2 * 2.5e-5 / 3)
    t = 0.02 / se
    w = welch(a, b, 0.95)
    assert w["diff"] == pytest.approx(0.02)
    assert w["p"] == pytest.approx(2 * scipy_stats.t.sf(t, 4))
    assert w["p"] == pytest.approx(0.00805, abs=1e-5)
    assert (w["ci_low"], w["ci_high"]) == pytest.approx((0.02 - 2.776445105 * se, 0.02 + 2.776445105 * se))


def test_welch_with_one_side_all_equal_is_the_other_sides_t_test_and_quiet():
    """Three seeds at 91.41% each: variance 0 on that side, so se and df come from the other (df = 3 - 1)."""
    a, b = [0.9141] * 3, [0.9195, 0.9170, 0.9230]
    se = statistics.stdev(b) / math.sqrt(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's "precision loss" warning would land in the report's log
        w = welch(a, b, 0.95)
    assert w["p"] == pytest.approx(2 * scipy_stats.t.sf(abs(w["diff"]) / se, 2))
    half = scipy_stats.t.ppf(0.975, 2) * se
    assert (w["ci_low"], w["ci_high"]) == pytest.approx((w["diff"] - half, w["diff"] + half))


def test_welch_undefined_without_two_seeds_or_spread():
    assert welch([0.9], [0.8, 0.81], 0.95)["p"] is None
    assert welch([0.9, 0.9], [0.8, 0.8], 0.95) == {
        "diff": pytest.approx(0.1),
        "ci_low": None,
        "ci_high": None,
        "p": None,
    }


@pytest.mark.parametrize(
    "pvalues, adjusted",
    [
        ([0.01, 0.04, None, 0.03], [0.03, 0.06, None, 0.06]),  # 3 x 0.01; 2 x 0.03; max(0.06, 1 x 0.04)
        ([0.5, 0.001, 0.02], [0.5, 0.003, 0.04]),
        ([0.6, 0.7], [1.0, 1.0]),  # capped at 1
        ([], []),
    ],
)
def test_holm_by_hand(pvalues, adjusted):
    assert holm(pvalues) == pytest.approx(adjusted) if adjusted else holm(pvalues) == []


def test_holm_gives_the_hand_written_step_down_bit_for_bit():
    """statsmodels' Holm replaced a hand-written one: on 300 random families (ties, Nones, p near 1 included)
    the two agree exactly, so every committed report and comparison.json stays byte for byte."""

    def by_hand(pvalues):  # the code this replaced: sorted ascending, times m - rank, running max, capped at 1
        present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
        m, adjusted, running = len(present), list(pvalues), 0.0
        for rank, (p, i) in enumerate(sorted(present)):
            running = max(running, min(1.0, (m - rank) * p))
            adjusted[i] = running
        return adjusted

    rng = np.random.default_rng(0)
    for _ in range(300):  # multipletests runs gc.collect() on every call: ~10 ms each under pytest
        values = [float(p) for p in rng.uniform(0, 1, rng.integers(1, 9)) ** rng.uniform(0.2, 4)]
        if rng.uniform() < 0.3:
            values[0] = values[-1]  # a tie
        if rng.uniform() < 0.3:
            values[rng.integers(len(values))] = None
        assert holm(values) == by_hand(values)


@pytest.mark.parametrize(
    "pvalues, levels",
    [
        # m = 3: 0.01 < 0.05/3 passes; 0.03 >= 0.05/2 fails and stops; 0.04 comes after the stop
        ([0.01, 0.04, None, 0.03], [0.05 / 3, 0.05 / 2, None, 0.05 / 2]),
        ([0.5, 0.001, 0.02], [0.05, 0.05 / 3, 0.05 / 2]),  # 0.001 and 0.02 pass; 0.5 fails at 0.05
        ([0.2], [0.05]),
    ],
)
def test_holm_levels_by_hand(pvalues, levels):
    assert holm_levels(pvalues, 0.05) == pytest.approx(levels)


def test_every_verdict_agrees_with_its_interval():
    """Random seeds' accuracies, many times: better/worse exactly when the printed interval excludes 0."""
    rng = np.random.default_rng(0)
    disagreements, called = 0, 0
    for _ in range(100):
        shifts = rng.normal(0, 0.006, 4)
        spreads = rng.uniform(0.0005, 0.005, 5)
        accuracies = {"vanilla": list(0.91 + rng.normal(0, spreads[0], 3))}
        for k, name in enumerate(["a", "b", "c", "d"]):
            accuracies[name] = list(0.91 + shifts[k] + rng.normal(0, spreads[k + 1], 3))
        compared = compare(results_from(accuracies), draws=20)  # the bootstrap plays no part here
        for _, row in compared.iterrows():
            excludes_zero = row["ci_low"] > 0 or row["ci_high"] < 0
            called += row["verdict"] in ("better", "worse")
            disagreements += excludes_zero != (row["verdict"] in ("better", "worse"))
    assert called > 30 and disagreements == 0


def test_the_case_that_disagreed_with_unadjusted_intervals():
    # dropout 0.5 against vanilla (docs/experiments.md): Welch p = 0.023, so its 95% interval excludes 0,
    # but Holm-adjusted p = 0.069 (not distinguishable); the interval printed now includes 0, as the verdict says
    accuracies = {
        "vanilla": [0.9136, 0.9138, 0.9149],
        "batchnorm": [0.9182, 0.9227, 0.9177],
        "dropout": [0.8941, 0.8993, 0.9027],
        "weight_decay": [0.913, 0.9162, 0.915],
        "mlp": [0.8801, 0.8846, 0.8812],
    }
    row = compare(results_from(accuracies)).loc["dropout"]
    assert row["verdict"] == "undecided" and row["ci_low"] < 0 < row["ci_high"]
    oracle = scipy_stats.ttest_ind(accuracies["dropout"], accuracies["vanilla"], equal_var=False)
    assert oracle.confidence_interval(0.95).high < 0  # what the report printed before
    # m = 4: mlp (p = 0.0008) passes at 0.05/4; dropout is next, fails at 0.05/3, and Holm stops there
    assert row["ci_high"] == pytest.approx(oracle.confidence_interval(1 - 0.05 / 3).high)


def test_looks_split_alpha_bonferroni_style():
    """Two looks: every test at 0.05 / 2. A difference with Welch p between 0.025 and 0.05 is better at one look
    and undecided at two, and its interval widens to the 97.5% one."""
    accuracies = {"vanilla": [0.900, 0.905, 0.910], "batchnorm": [0.912, 0.917, 0.922]}
    oracle = scipy_stats.ttest_ind(accuracies["batchnorm"], accuracies["vanilla"], equal_var=False)
    assert 0.025 < oracle.pvalue < 0.05
    one, two = (compare(results_from(accuracies), looks=n).loc["batchnorm"] for n in (1, 2))
    assert one["verdict"] == "better" and two["verdict"] == "undecided"
    assert two["ci_low"] == pytest.approx(oracle.confidence_interval(1 - 0.05 / 2).low)
    assert two["seeds_needed"] >= 4  # undecided at 3 seeds: the count that would decide it, at alpha / 2
    text = text_of(results_from(accuracies), SETTINGS.model_copy(update={"looks": [3, 5]}))
    assert "alpha = 0.05 / 2 looks = 0.025" in text


def test_verdicts():
    assert verdict(0.01, 0.001, 0.9, 0.05) == "better"
    assert verdict(-0.01, 0.001, 0.9, 0.05) == "worse"
    assert verdict(0.0001, 0.6, 0.01, 0.05) == "equivalent"
    assert verdict(0.01, 0.2, 0.3, 0.05) == "undecided"
    assert verdict(0.01, None, None, 0.05).startswith("no test")


def results_from(accuracies, epochs=3):
    """{variant: {metrics, history}} as evaluate and train write them, from {variant: [test acc per seed]}."""
    results = {}
    for name, accs in accuracies.items():
        per_seed = {
            seed: {
                "test_acc": acc,
                "val_acc": acc,
                "train_acc": acc,
                "test_loss": 1 - acc,
                "val_loss": 1 - acc,
                "train_loss": 1 - acc,
                "best_epoch": epochs,
                "epochs_run": epochs,
            }
            for seed, acc in enumerate(accs)
        }
        metrics = {**aggregate(per_seed, 0.95), "parameters": 1000}
        images = 2000  # each seed right on the first round(acc * images) test images: its accuracy, near enough
        correct = np.stack([np.arange(images) < round(acc * images) for acc in accs])
        history = [
            {
                "epoch": e,
                **{f"{k}_seed{s}": 1.0 / e for s in per_seed for k in ("val_loss", "train_loss")},
                **{f"{k}_seed{s}": 0.5 for s in per_seed for k in ("val_acc", "train_acc")},
                "val_loss": 1.0 / e,
                "train_loss": 1.0 / e,
                "val_acc": 0.5,
                "train_acc": 0.5,
            }
            for e in range(1, epochs + 1)
        ]
        results[name] = {"metrics": metrics, "history": history, "correct": correct}
    return results


def test_report_words_match_the_intervals():
    results = results_from(
        {"vanilla": [0.90, 0.91, 0.905], "batchnorm": [0.92, 0.93, 0.925], "dropout": [0.90, 0.915, 0.905]}
    )
    compared = compare(results)
    assert compared.loc["batchnorm", "verdict"] == "better"
    assert compared.loc["batchnorm", "p_holm"] == pytest.approx(2 * compared.loc["batchnorm", "p"])
    assert compared.loc["dropout", "verdict"] == "undecided"
    for _, row in compared.iterrows():  # better/worse only where the interval excludes 0
        if row["verdict"] in ("better", "worse"):
            assert row["ci_low"] > 0 or row["ci_high"] < 0
    text = text_of(results)
    # the smallest of 2 p-values is tested at alpha/2: its interval is scipy's at 97.5%
    ci = scipy_stats.ttest_ind([0.92, 0.93, 0.925], [0.90, 0.91, 0.905], equal_var=False).confidence_interval(0.975)
    assert (ci.low, ci.high) == pytest.approx((0.00573, 0.03427), abs=5e-6)
    assert (
        "- batchnorm − vanilla: +2.00 pt [+0.57, +3.43] over seeds, [+0.28, +3.72] with the test set's noise too; "
        "difference: Welch p = 0.00805, Holm 0.0161; equivalence: TOST p = 0.993, Holm 0.993: **better**" in text
    )
    assert "| batchnorm | 1,000 | 3 | 92.50% ± 0.50 [91.26, 93.74] |" in re.sub(" +", " ", text)
    assert "nan" not in text.lower()


def test_one_seed_gets_a_note_not_nan():
    results = results_from({"vanilla": [0.90], "batchnorm": [0.92]})
    text = text_of(results, names=())
    assert "Note: vanilla, batchnorm had one seed: no spread, so no interval and no test" in text
    assert "batchnorm − vanilla: +2.00 pt, no test (needs 2+ seeds with spread)" in text
    assert "| vanilla | 1,000 | 1 | 90.00% | 90.00% | baseline | 3 of 3 |" in re.sub(" +", " ", text)
    assert "nan" not in text.lower()


def test_best_epochs_say_how_many_epochs_each_seed_ran():
    results = results_from({"vanilla": [0.90, 0.91], "batchnorm": [0.92, 0.93]}, epochs=3)
    results["batchnorm"]["metrics"].update(best_epoch_seed0=2, epochs_run_seed1=5, best_epoch_seed1=5)
    rows = table(results, compare(results), "vanilla", 0.8).set_index("variant")["best epochs"]
    assert rows.to_dict() == {"vanilla": "3, 3 of 3", "batchnorm": "2 of 3, 5 of 5"}  # e.g. an early stop


def test_still_improving_flags_a_falling_last_epoch_only():
    results = results_from({"vanilla": [0.9, 0.91]}, epochs=3)  # val loss 1, 1/2, 1/3: falling
    assert [(n, s, e) for n, s, e, _ in still_improving(results, 0.005)] == [("vanilla", 0, 3), ("vanilla", 1, 3)]
    for row in results["vanilla"]["history"]:
        row["val_loss_seed1"] = 0.5  # flat: not flagged
    assert [(n, s) for n, s, _, _ in still_improving(results, 0.005)] == [("vanilla", 0)]


def test_one_seed_metrics_have_no_spread_keys_and_no_nan():
    metrics = aggregate(
        {7: {"test_acc": 0.9, "val_acc": 0.8, "train_acc": 0.95, "test_loss": 0.3, "val_loss": 0.4, "train_loss": 0.2}},
        0.95,
    )
    assert metrics["seeds"] == 1 and metrics["test_acc_mean"] == 0.9 and metrics["test_acc_seed7"] == 0.9
    assert not [k for k in metrics if k.endswith(("_std", "_ci_low", "_ci_high"))]
    assert all(v == v for v in metrics.values())  # NaN != NaN


def welch_df(a, b):
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    return (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))


def test_tost_by_hand_and_against_statsmodels():
    from statsmodels.stats.weightstats import ttost_ind

    a, b, margin = [0.9141, 0.9150, 0.9137, 0.9149], [0.9146, 0.9131, 0.9157], 0.003
    diff = np.mean(a) - np.mean(b)
    se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    df = welch_df(a, b)
    lower = scipy_stats.t.sf((diff + margin) / se, df)  # H0: diff <= -margin
    upper = scipy_stats.t.cdf((diff - margin) / se, df)  # H0: diff >= +margin
    assert tost(a, b, margin) == pytest.approx(max(lower, upper), rel=1e-9)
    assert tost(a, b, margin) == pytest.approx(ttost_ind(a, b, -margin, margin, usevar="unequal")[0], rel=1e-9)
    assert tost(a, b, margin) < 0.05 < tost(a, b, 0.0005)  # equivalent within 0.3 pt, not within 0.05 pt
    assert tost([0.9], b, margin) is None and tost([0.9, 0.9], [0.8, 0.8], margin) is None


def test_welch_with_unequal_seed_counts_against_scipy():
    a, b = [0.9141, 0.9150, 0.9137, 0.9149, 0.9160], [0.9182, 0.9227]
    oracle = scipy_stats.ttest_ind(a, b, equal_var=False)
    result = welch(a, b, 0.95)
    assert result["p"] == pytest.approx(oracle.pvalue) and result["diff"] == pytest.approx(np.mean(a) - np.mean(b))
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(tuple(oracle.confidence_interval(0.95)))
    assert oracle.df == pytest.approx(welch_df(a, b))


def test_seeds_to_decide_a_difference_is_cohens_table():
    # effect size d = 0.5 (difference 0.5, sd 1), alpha 0.05, power 0.8: 64 per group (Cohen 1988, table 2.4.1)
    a, b = [-0.5, 0.5, 1.5], [-1.0, 0.0, 1.0]
    assert seeds_to_decide(a, b, margin=0.1, alpha=0.05, power=0.8) == 64
    # d = 0.8: 26 per group
    assert seeds_to_decide([-0.2, 0.8, 1.8], b, margin=0.1, alpha=0.05, power=0.8) == 26


def simulated_power(diff, sd_a, sd_b, n, alpha, draws=40_000, seed=0):
    """The share of `draws` pairs of normal n-seed samples that scipy's Welch test calls different: the oracle."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(diff, sd_a, (draws, n)), rng.normal(0.0, sd_b, (draws, n))
    return float((scipy_stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue < alpha).mean())


@pytest.mark.parametrize(
    ("diff", "sd_a", "sd_b", "n"),
    [
        (-0.0067, 0.00035, 0.0011, 4),  # the study's cnn2 - cnn4: a noncentral t with Welch's df said 0.755
        (-0.0137, 0.00015, 0.0011, 3),  # cnn4_lr005 - cnn4: one side's seeds agree 7 times more closely
        (0.002, 0.001, 0.003, 8),
        (0.5, 1.0, 1.0, 20),  # equal spreads
    ],
)
def test_welch_power_is_the_share_of_simulated_welch_tests_that_reject(diff, sd_a, sd_b, n):
    alpha = 0.05 / 3 / 20  # the study's: 3 looks, 20 comparisons
    noise = 3.2 * 0.5 / 40_000**0.5  # 3.2 binomial standard errors of 40,000 draws, at their widest (p = 0.5)
    assert welch_power(diff, sd_a, sd_b, n, alpha) == pytest.approx(
        simulated_power(diff, sd_a, sd_b, n, alpha), abs=noise
    )


def test_seeds_to_decide_a_difference_with_unequal_spreads_agrees_with_a_simulation():
    """The study's cnn2 against cnn4 (0.05 / 3 looks / 20 comparisons): undecided at 3 seeds, where the report named
    3 from a pooled t-test's power; simulated Welch tests reach 80% at 5 seeds, not at 4."""
    a, b, alpha = [0.9282, 0.9285, 0.9289], [0.9360, 0.9356, 0.9340], 0.05 / 3 / 20
    n = seeds_to_decide(a, b, margin=0.003, alpha=alpha, power=0.8)
    diff, sd_a, sd_b = np.mean(a) - np.mean(b), np.std(a, ddof=1), np.std(b, ddof=1)
    assert simulated_power(diff, sd_a, sd_b, n - 1, alpha) < 0.8 <= simulated_power(diff, sd_a, sd_b, n, alpha)
    assert n == 5


def test_seeds_to_decide_a_large_effect_at_a_small_alpha():
    """statsmodels' solve_power returned NaN here (the shrunk study: one side at 100% on both seeds, the other
    far below, tested at 0.05 / 3 looks / 2 comparisons); the count is the smallest n whose simulated power
    reaches 0.8."""
    a, b, alpha = [1.0, 1.0 + 1e-9], [0.0, 0.7], 0.05 / 3 / 2
    n = seeds_to_decide(a, b, margin=0.003, alpha=alpha, power=0.8)
    diff, sd_a, sd_b = np.mean(a) - np.mean(b), np.std(a, ddof=1), np.std(b, ddof=1)
    assert simulated_power(diff, sd_a, sd_b, n - 1, alpha) < 0.8 <= simulated_power(diff, sd_a, sd_b, n, alpha)


def test_tost_power_and_its_seed_count_agree_with_a_simulation():
    from statsmodels.stats.weightstats import ttost_ind

    diff, margin, alpha = 0.0005, 0.003, 0.05
    a, b = [diff + 0.002, diff - 0.002], [0.001, -0.001]  # unequal spreads: Welch's TOST, as the verdict's
    n = seeds_to_decide(a, b, margin, alpha, 0.8)
    sd_a, sd_b = np.std(a, ddof=1), np.std(b, ddof=1)
    assert tost_power(diff, sd_a, sd_b, n, margin, alpha) >= 0.8 > tost_power(diff, sd_a, sd_b, n - 1, margin, alpha)
    rng = np.random.default_rng(0)
    for seeds in (n, 3):
        hits = 0
        for _ in range(3000):
            x, y = rng.normal(diff, sd_a, seeds), rng.normal(0, sd_b, seeds)
            hits += ttost_ind(x, y, -margin, margin, usevar="unequal")[0] < alpha
        assert hits / 3000 == pytest.approx(tost_power(diff, sd_a, sd_b, seeds, margin, alpha), abs=0.03)


def test_an_undecided_comparison_says_how_many_seeds_would_decide_it():
    accuracies = {"vanilla": [0.9136, 0.9138, 0.9149], "weight_decay": [0.913, 0.9162, 0.915]}
    row = compare(results_from(accuracies)).loc["weight_decay"]
    assert row["verdict"] == "undecided" and row["seeds_needed"] > 3
    text = text_of(results_from(accuracies))
    assert f"**undecided**; {int(row['seeds_needed'])} seeds per variant would decide it (80% power)" in text


def test_two_close_variants_with_many_seeds_are_equivalent():
    rng = np.random.default_rng(1)
    accuracies = {"vanilla": list(0.914 + rng.normal(0, 0.001, 12)), "twin": list(0.914 + rng.normal(0, 0.001, 12))}
    row = compare(results_from(accuracies)).loc["twin"]
    assert row["verdict"] == "equivalent" and row["p_tost_holm"] < 0.05 and pd_isna(row["seeds_needed"])


def pd_isna(x):
    return x is None or (isinstance(x, float) and math.isnan(x))


def test_the_image_bootstrap_has_the_closed_form_width():
    """The paired bootstrap's SD of a mean over images is sd(d_i) / sqrt(n) for d_i the per-image difference."""
    rng = np.random.default_rng(2)
    images = 4000
    a = rng.random((2, images)) < 0.9
    b = np.where(rng.random(images) < 0.8, a[0], rng.random(images) < 0.9)[None, :]  # correlated, as models are
    d = a.mean(0) - b.mean(0)
    assert image_noise_se(a, b, draws=4000) == pytest.approx(d.std(ddof=1) / math.sqrt(images), rel=0.05)
    assert image_noise_se(a, b) == image_noise_se(a, b)  # seeded: the record stays byte-identical


def test_the_interval_with_the_test_set_adds_its_variance_to_the_seeds():
    a, b = [0.9182, 0.9227, 0.9177], [0.9136, 0.9138, 0.9149]
    seeds_only = welch(a, b, 0.95)
    low, high = with_test_set(a, b, 0.0, 0.95)  # no test-set noise: Welch's interval
    assert (low, high) == pytest.approx((seeds_only["ci_low"], seeds_only["ci_high"]))
    low, high = with_test_set(a, b, 0.002, 0.95)
    assert low < seeds_only["ci_low"] and high > seeds_only["ci_high"]
    se = math.sqrt(np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 3 + 0.002**2)
    assert high - low == pytest.approx(2 * scipy_stats.t.ppf(0.975, welch_df(a, b)) * se)
    assert with_test_set([0.9], [0.8], 0.01, 0.95) == pytest.approx((0.1 - 1.959964 * 0.01, 0.1 + 1.959964 * 0.01))


def test_intervals_stay_inside_what_the_quantity_can_be():
    accuracy = summary([0.999, 0.70], 0.95, (0.0, 1.0))
    assert accuracy["ci_high"] == 1.0 and accuracy["ci_low"] == 0.0  # t with 1 df reaches far past both ends
    loss = summary([0.01, 0.5], 0.95, (0.0, math.inf))
    assert loss["ci_low"] == 0.0 and loss["ci_high"] > 0.5
    metrics = aggregate({0: dict.fromkeys(SUMMARY_KEYS, 0.99), 1: dict.fromkeys(SUMMARY_KEYS, 0.40)}, 0.95)
    assert all(
        0 <= metrics[f"{k}_ci_low"] and (k.endswith("loss") or metrics[f"{k}_ci_high"] <= 1) for k in SUMMARY_KEYS
    )


SUMMARY_KEYS = ("test_acc", "val_acc", "train_acc", "test_loss", "val_loss", "train_loss")
