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
from pipeline.report import comparisons, report_text, still_improving, table
from pipeline.stats import holm, holm_levels, summary, verdict, welch


def test_summary_by_hand():
    s = summary([0.90, 0.91, 0.92], 0.95)
    # mean 0.91, sample std 0.01; t(0.975, df=2) = 4.3027 from any t-table
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.91) and s["std"] == pytest.approx(0.01)
    half = 4.302652729911275 * 0.01 / math.sqrt(3)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((0.91 - half, 0.91 + half))


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
    for _ in range(300):
        shifts = rng.normal(0, 0.006, 4)
        spreads = rng.uniform(0.0005, 0.005, 5)
        accuracies = {"vanilla": list(0.91 + rng.normal(0, spreads[0], 3))}
        for k, name in enumerate(["a", "b", "c", "d"]):
            accuracies[name] = list(0.91 + shifts[k] + rng.normal(0, spreads[k + 1], 3))
        compared = comparisons(results_from(accuracies), "vanilla", 0.95)
        for _, row in compared.iterrows():
            excludes_zero = row["ci_low"] > 0 or row["ci_high"] < 0
            called += row["verdict"] in ("better", "worse")
            disagreements += excludes_zero != (row["verdict"] in ("better", "worse"))
    assert called > 100 and disagreements == 0


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
    row = comparisons(results_from(accuracies), "vanilla", 0.95).loc["dropout"]
    assert row["verdict"] == "not distinguishable from seed noise" and row["ci_low"] < 0 < row["ci_high"]
    oracle = scipy_stats.ttest_ind(accuracies["dropout"], accuracies["vanilla"], equal_var=False)
    assert oracle.confidence_interval(0.95).high < 0  # what the report printed before
    # m = 4: mlp (p = 0.0008) passes at 0.05/4; dropout is next, fails at 0.05/3, and Holm stops there
    assert row["ci_high"] == pytest.approx(oracle.confidence_interval(1 - 0.05 / 3).high)


def test_verdicts():
    assert verdict(0.01, 0.001, 0.05) == "better"
    assert verdict(-0.01, 0.001, 0.05) == "worse"
    assert verdict(0.01, 0.2, 0.05) == "not distinguishable from seed noise"
    assert verdict(0.01, None, 0.05).startswith("no test")


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
        metrics = {**aggregate(per_seed, 0.95), "parameters": 1000, "seconds_per_epoch": 1.0}
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
        results[name] = {"metrics": metrics, "history": history}
    return results


def test_report_words_match_the_intervals():
    results = results_from(
        {"vanilla": [0.90, 0.91, 0.905], "batchnorm": [0.92, 0.93, 0.925], "dropout": [0.90, 0.915, 0.905]}
    )
    compared = comparisons(results, "vanilla", 0.95)
    assert compared.loc["batchnorm", "verdict"] == "better"
    assert compared.loc["batchnorm", "p_holm"] == pytest.approx(2 * compared.loc["batchnorm", "p"])
    assert compared.loc["dropout", "verdict"] == "not distinguishable from seed noise"
    for _, row in compared.iterrows():  # better/worse only where the interval excludes 0
        if row["verdict"] in ("better", "worse"):
            assert row["ci_low"] > 0 or row["ci_high"] < 0
    text = report_text(results, "vanilla", 0.95, 0.005, Path("plots"), ["test_accuracy"])
    # the smallest of 2 p-values is tested at alpha/2: its interval is scipy's at 97.5%
    ci = scipy_stats.ttest_ind([0.92, 0.93, 0.925], [0.90, 0.91, 0.905], equal_var=False).confidence_interval(0.975)
    assert (ci.low, ci.high) == pytest.approx((0.00573, 0.03427), abs=5e-6)
    assert (
        "- batchnorm − vanilla: +2.00 pt [+0.57, +3.43], p = 0.00805 (Welch), Holm-adjusted p = 0.0161: "
        "**better**" in text
    )
    assert "| batchnorm | 1,000 | 3 | 92.50% ± 0.50 [91.26, 93.74] |" in re.sub(" +", " ", text)
    assert "nan" not in text.lower()


def test_one_seed_gets_a_note_not_nan():
    results = results_from({"vanilla": [0.90], "batchnorm": [0.92]})
    text = report_text(results, "vanilla", 0.95, 0.005, Path("plots"), [])
    assert "Note: vanilla, batchnorm had one seed: no spread, so no interval and no test" in text
    assert "batchnorm − vanilla: +2.00 pt, no test (needs 2+ seeds with spread)" in text
    assert "| vanilla | 1,000 | 1 | 90.00% | 90.00% | baseline | 3 of 3 | 1.00 |" in re.sub(" +", " ", text)
    assert "nan" not in text.lower()


def test_best_epochs_say_how_many_epochs_each_seed_ran():
    results = results_from({"vanilla": [0.90, 0.91], "batchnorm": [0.92, 0.93]}, epochs=3)
    results["batchnorm"]["metrics"].update(best_epoch_seed0=2, epochs_run_seed1=5, best_epoch_seed1=5)
    rows = table(results, comparisons(results, "vanilla", 0.95), "vanilla").set_index("variant")["best epochs"]
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
