"""Savings statistics on curves whose answers are worked out by hand (pipeline/active_learning/stats.py)."""

from __future__ import annotations

import math

import pytest

from pipeline.active_learning.stats import annotations_to_reach, final_difference, savings

XS = [0, 10, 20]


def test_annotations_to_reach_interpolates_between_rounds() -> None:
    assert annotations_to_reach(XS, [0.2, 0.4, 0.6], 0.5) == pytest.approx(15.0)  # halfway 10 -> 20
    assert annotations_to_reach(XS, [0.2, 0.4, 0.6], 0.4) == pytest.approx(10.0)
    assert annotations_to_reach(XS, [0.7, 0.4, 0.6], 0.5) == 0.0  # the start is already there
    assert math.isnan(annotations_to_reach(XS, [0.2, 0.4, 0.45], 0.5))  # never: censored
    # a dip and a recovery: the FIRST crossing counts
    assert annotations_to_reach([0, 10, 20, 30], [0.2, 0.6, 0.3, 0.9], 0.5) == pytest.approx(7.5)
    with pytest.raises(ValueError, match="matching"):
        annotations_to_reach([0, 1], [0.1], 0.5)


def test_savings_and_its_bootstrap_interval_by_hand() -> None:
    random = [(XS, [0.2, 0.4, 0.6]), (XS, [0.2, 0.5, 0.6])]  # target: final 0.6 in both; budget 20
    strategy = [(XS, [0.2, 0.6, 0.7]),  # reaches 0.6 at 10
                (XS, [0.2, 0.5, 0.7])]  # at 10 + (0.1 / 0.2) * 10 = 15
    sv = savings(random, strategy, resamples=4000)
    assert sv.target == pytest.approx(0.6) and sv.budget == 20 and sv.random_needed == pytest.approx(20.0)
    assert sv.per_seed_needed == pytest.approx([10.0, 15.0])
    assert sv.needed == pytest.approx(12.5) and sv.saved_fraction == pytest.approx(0.375)
    # paired resamples of 2 seeds: (10, 10) -> 0.5, mixed -> 0.375, (15, 15) -> 0.25, each extreme 1/4
    assert sv.paired and sv.ci_low == pytest.approx(0.25) and sv.ci_high == pytest.approx(0.5)
    assert sv.supported and sv.censored == 0


def test_a_seed_that_never_reaches_the_target_counts_at_the_full_budget() -> None:
    random = [(XS, [0.2, 0.4, 0.6]), (XS, [0.2, 0.4, 0.6])]
    strategy = [(XS, [0.2, 0.6, 0.7]), (XS, [0.2, 0.3, 0.4])]  # 10, and never (counted at 20)
    sv = savings(random, strategy, resamples=2000)
    assert sv.censored == 1 and math.isnan(sv.per_seed_needed[1])
    assert sv.needed == pytest.approx(15.0) and sv.saved_fraction == pytest.approx(0.25)
    assert sv.ci_low == pytest.approx(0.0) and not sv.supported  # half the resamples save nothing
    assert sv.as_dict()["per_seed_needed"] == [10.0, None] and "1 of 2" in sv.note


def test_nothing_to_save_when_random_ends_where_it_started() -> None:
    falling = [(XS, [0.6, 0.5, 0.5]), (XS, [0.6, 0.55, 0.5])]  # target 0.5, reached at 0 annotations
    sv = savings(falling, falling, resamples=200)
    assert sv.random_needed == 0.0 and sv.saved_fraction == 0.0 and not sv.supported
    assert "nothing to save" in sv.note


def test_no_saving_when_the_strategy_equals_random() -> None:
    curves = [(XS, [0.2, 0.4, 0.6]), (XS, [0.1, 0.3, 0.5]), (XS, [0.3, 0.5, 0.7])]
    sv = savings(curves, curves, resamples=2000)
    # target 0.6: seed 0 reaches it at 20, seed 1 never (counted at 20), seed 2 at 15 -> 55/3 each side;
    # measured against the budget (20) instead, this would claim 1 - (55/3)/20 = 8 % "saved"
    assert sv.needed == pytest.approx(55 / 3) and sv.random_needed == pytest.approx(55 / 3)
    assert sv.saved_fraction == pytest.approx(0.0)
    assert sv.ci_low == pytest.approx(0.0) and sv.ci_high == pytest.approx(0.0) and not sv.supported


def test_unpaired_when_seed_counts_differ() -> None:
    random = [(XS, [0.2, 0.4, 0.6])]
    strategy = [(XS, [0.2, 0.6, 0.7]), (XS, [0.2, 0.6, 0.7])]
    sv = savings(random, strategy, resamples=500)
    assert not sv.paired and sv.saved_fraction == pytest.approx(0.5) and sv.ci_low == pytest.approx(0.5)
    with pytest.raises(ValueError, match="equal seeds"):
        savings(random, strategy, paired=True)


def test_final_difference_paired_by_hand() -> None:
    d = final_difference([0.5, 0.6], [0.7, 0.6], resamples=4000)
    # per-seed differences 0.2 and 0.0: resampled means 0.2, 0.1 or 0.0
    assert d.mean == pytest.approx(0.1) and d.paired
    assert d.ci_low == pytest.approx(0.0) and d.ci_high == pytest.approx(0.2)


def _records(spine: list[float], effort: list[int]) -> list[dict[str, object]]:
    """Bench records (bench/active_learning.py `run_one`) with 10 annotations a round."""
    out = []
    for n, (ap, e) in enumerate(zip(spine, effort, strict=True)):
        metrics = {part: {"all_AP": ap, "body_AP": ap, "feet_AP": ap, "spine_AP": ap, "mean_oks": ap,
                          "instances": 10.0} for part in ("real", "synthetic")}
        out.append({"round": n, "cumulative": 10 * n, "effort": e, "effort_deleted": 0,
                    "cumulative_effort": sum(effort[: n + 1]), "metrics": metrics})
    return out


def test_bench_summary_picks_the_strategy_that_wins_at_equal_budget() -> None:
    from bench.active_learning import compare, mean_curves, verdict

    # 8 seeds: the verdict's exact sign-flip test cannot reject at 5 % with fewer than 6 pairs
    runs = {
        "random|aa-off": {s: _records([0.2, 0.4, 0.6], [0, 30, 30]) for s in range(8)},
        "effort|aa-off": {s: _records([0.2, 0.6, 0.7 + 0.01 * s], [0, 40, 20]) for s in range(8)},
        "kcenter|aa-off": {s: _records([0.2, 0.3, 0.5], [0, 30, 30]) for s in range(8)},
    }
    curves = mean_curves(runs)
    assert curves["effort|aa-off"][-1]["synthetic_spine_AP"] == pytest.approx(0.735)
    assert curves["effort|aa-off"][-1]["cumulative_effort"] == 60
    found = compare(runs, resamples=300)
    sp = found["effort|aa-off"]["synthetic_spine_AP"]
    # random reaches its final 0.6 at 20; effort at 10 in every seed: half the annotations
    assert sp["savings"]["saved_fraction"] == pytest.approx(0.5) and sp["savings"]["supported"]
    assert sp["saving"]["saved_fraction"] == pytest.approx(0.5) and sp["saving"]["supported"]
    assert sp["final_difference"]["mean"] == pytest.approx(0.135)
    # every pair favours effort: p = 2 / 2^8, the interval within the per-seed differences
    test = sp["final_difference_test"]
    assert test["p_value"] == pytest.approx(2 / 256) and 0.11 <= test["ci_low"] < test["ci_high"] <= 0.18
    assert found["kcenter|aa-off"]["synthetic_spine_AP"]["savings"]["saved_fraction"] == pytest.approx(0.0)
    v = verdict(found, "aa-off")
    assert v["best_strategy"] == "effort" and v["beats_random_at_equal_budget"] and v["goal_30pct_met"]
    assert v["recommend_default"] == "effort"


def test_bench_recommends_random_when_nothing_beats_it() -> None:
    from bench.active_learning import compare, verdict

    runs = {
        "random|aa-off": {s: _records([0.2, 0.4, 0.6 + 0.01 * s], [0, 30, 30]) for s in range(3)},
        "kcenter|aa-off": {s: _records([0.2, 0.3, 0.5 + 0.01 * s], [0, 30, 30]) for s in range(3)},
    }
    v = verdict(compare(runs, resamples=300), "aa-off")
    assert v["best_strategy"] == "kcenter" and not v["beats_random_at_equal_budget"]
    assert v["recommend_default"] == "random"


def test_the_defaults_are_the_measured_ones() -> None:
    """Issues 13 and 23: the default strategy is what wins on spine AP at equal budget in the
    full-scale bench, with the default auto-accept setting, and that setting is what the bench's
    auto-accept measurement recommends."""
    import json
    from pathlib import Path

    from pipeline.active_learning.loop import RoundSettings
    from pipeline.active_learning.selection import DEFAULT_STRATEGY

    result = Path(__file__).resolve().parents[1] / "bench" / "results" / "active_learning.json"
    data = json.loads(result.read_text())
    assert data["scale"] == "full" and not data["partial"], "the committed bench result is not a full run"
    assert len(data["seeds"]) >= 8 and len(data["start_models"]) >= 2
    mode = "aa-on" if RoundSettings().auto_accept else "aa-off"
    assert data["verdict"][mode]["recommend_default"] == DEFAULT_STRATEGY
    assert data["auto_accept"]["recommend_auto_accept"] == RoundSettings().auto_accept


def _with_auto(records: list[dict[str, object]], accepted: int, good: int,
               lower: float) -> list[dict[str, object]]:
    for r in records[1:]:
        r.update(auto_accepted=accepted, auto_accepted_scored=accepted, auto_accepted_good=good,
                 threshold={"enabled": accepted > 0, "precision_lower": lower})
    return records


def test_random_without_auto_accept_runs_only_where_auto_accept_accepted_something() -> None:
    import argparse

    from bench.active_learning import baseline_specs

    runs = {"random|aa-on": {0: _with_auto(_records([0.2, 0.4], [0, 30]), 0, 0, 0.7),
                             1: _with_auto(_records([0.2, 0.4], [0, 30]), 3, 3, 0.91)}}
    args = argparse.Namespace(auto_accept="on", aa_baseline="auto")
    assert [(s.key, s.seed) for s in baseline_specs(args, runs)] == [("random|aa-off", 1)]
    assert baseline_specs(argparse.Namespace(auto_accept="on", aa_baseline="never"), runs) == []


def test_auto_accept_verdict_when_nothing_cleared_the_bound() -> None:
    from bench.active_learning import auto_accept_verdict
    from pipeline.active_learning.loop import RoundSettings

    runs = {key: {s: _with_auto(_records([0.2, 0.4, 0.5], [0, 30, 30]), 0, 0, 0.6 + 0.01 * s)
                  for s in range(8)} for key in ("random|aa-on", "uncertainty|aa-on")}
    v = auto_accept_verdict(runs, {}, z=1.645)
    assert v["auto_accepted"] == 0 and v["saved_annotations"] == 0 and v["precision"] is None
    assert v["best_calibrated_lower"] == pytest.approx(0.67) and v["rounds"] == 32
    assert v["recommend_auto_accept"] == RoundSettings().auto_accept  # no evidence either way: it stands


def test_auto_accept_verdict_turns_it_off_when_its_labels_are_not_precise() -> None:
    from bench.active_learning import auto_accept_verdict, compare

    runs = {"random|aa-on": {s: _with_auto(_records([0.2, 0.5, 0.6], [0, 30, 30]), 10, 6, 0.92)
                             for s in range(8)},
            "random|aa-off": {s: _records([0.2, 0.4, 0.6], [0, 30, 30]) for s in range(8)}}
    v = auto_accept_verdict(runs, compare(runs, resamples=100), z=1.645)
    assert v["auto_accepted"] == 160 and v["precision"] == pytest.approx(0.6)
    assert v["wilson_lower"] < 0.9 and v["recommend_auto_accept"] is False
    assert "saved_annotations_fraction" in v
