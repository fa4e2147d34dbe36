"""Round bookkeeping: steps are recorded in order, a re-opened round resumes, reports render."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.active_learning.rounds import (
    finish_step,
    history,
    metrics_table,
    next_round_number,
    open_round,
    plot_learning_curve,
    step_done,
)
from pipeline.store import Store


def test_round_resumes_after_the_last_finished_step(store: Store) -> None:
    assert next_round_number(store) == 1
    rnd = open_round(store, 1, strategy="diversity", budget=5)
    assert not step_done(rnd, "pseudo_label")
    finish_step(store, 1, "pseudo_label", predicted=12)
    finish_step(store, 1, "calibrate", threshold=0.3)
    again = open_round(store, 1, strategy="ignored", budget=99)
    assert again.strategy == "diversity" and again.budget == 5
    assert step_done(again, "calibrate") and not step_done(again, "auto_accept")
    assert again.state["predicted"] == 12 and again.state["threshold"] == 0.3
    assert next_round_number(store) == 1  # unfinished: resume it
    with pytest.raises(ValueError):
        finish_step(store, 1, "teleport")


def test_model_and_report_follow_finished_rounds(store: Store, tmp_path: Path) -> None:
    open_round(store, 1, strategy="random", budget=3)
    finish_step(store, 1, "retrain", model_version="tiny-r1")
    real = {"all_AP": 0.4, "body_AP": 0.5, "feet_AP": 0.3, "spine_AP": 0.6, "instances": 12}
    synthetic = {"all_AP": 0.9, "body_AP": 0.8, "feet_AP": 0.7, "spine_AP": 0.6}
    finish_step(store, 1, "evaluate", metrics={"real": real, "synthetic": synthetic}, human_labels=3,
                auto_accepted=7, late_labels=2)
    finish_step(store, 1, "record")
    assert store.current_model() == "tiny-r1"
    assert next_round_number(store) == 2
    table = metrics_table(history(store))
    assert ("| 1 | complete | random | 3 | 3 | 2 | 7 | tiny-r1 | 0.400 | 0.500 | 0.300 | 0.600 | 12 | "
            "0.900 | 0.800 | 0.700 | 0.600 |") in table  # real headline, synthetic beside
    png = plot_learning_curve(history(store), tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- waiting rounds: close rule, settings on resume, the Wilson bound --------------------------------
def test_close_rule_share_age_and_request() -> None:
    from pipeline.active_learning.rounds import TaskStatus, close_decision, parse_duration

    assert parse_duration("3d") == 3 * 86400 and parse_duration("90m") == 5400 and parse_duration("45") == 45
    with pytest.raises(ValueError):
        parse_duration("soon")
    status = TaskStatus(round=1, total=30, done=25, open=5, age_s=3600.0)
    assert not close_decision(status, close_when=0.9, close_after_s=None).close
    assert close_decision(status, close_when=0.8, close_after_s=None).close
    assert not close_decision(status, close_when=0.9, close_after_s=parse_duration("3d")).close
    assert close_decision(status, close_when=0.9, close_after_s=parse_duration("1h")).close
    assert close_decision(status, close_when=1.0, close_after_s=None, close_now=True).close


def test_resume_keeps_the_stored_settings_whatever_the_flags(store: Store) -> None:
    from pipeline.active_learning.loop import RoundSettings, resolve_settings, start_round

    fresh, ignored = resolve_settings(store, 1, {"budget": 7, "close_when": 0.9})
    assert fresh == RoundSettings(budget=7, close_when=0.9) and not ignored
    start_round(store, 1, fresh, "tiny-start")
    again, ignored = resolve_settings(store, 1, {"budget": 50, "strategy": "kcenter", "close_when": 0.5,
                                                 "wait_s": 12.0})
    assert again.budget == 7 and again.strategy == fresh.strategy and again.close_when == 0.9
    assert again.wait_s == 12.0  # how long this call waits is the call's business
    assert ignored == {"budget": (50, 7), "strategy": ("kcenter", fresh.strategy), "close_when": (0.5, 0.9)}
    # defaults come from RoundSettings alone
    assert resolve_settings(store, 2, {})[0] == RoundSettings()


def test_wilson_bound_keeps_auto_accept_off_without_evidence() -> None:
    from pipeline.active_learning.calibration import calibrate_threshold, wilson_lower_bound

    assert wilson_lower_bound(30, 30) < 0.92 < wilson_lower_bound(100, 100)
    assert abs(wilson_lower_bound(50, 100, z=0.0) - 0.5) < 1e-12
    few = calibrate_threshold([0.1] * 10, [0.95] * 10, min_samples=30)
    assert not few.enabled and "only 10 real validation instances" in few.reason
    # 40 perfect labels: point precision 1.0, but the lower bound (0.94) still clears 0.9
    many = calibrate_threshold([i / 100 for i in range(40)], [0.95] * 40, min_samples=30)
    assert many.enabled and many.coverage == 1.0 and 0.9 <= many.precision_lower < 1.0
    # 30 perfect labels do not: the bound is 0.92 at best with 0.95 required
    strict = calibrate_threshold([i / 100 for i in range(30)], [0.95] * 30, min_precision=0.95,
                                 min_samples=30)
    assert not strict.enabled and "lower confidence bound" in strict.reason


def test_calibrate_reuses_the_previous_evaluation_only_of_the_same_model_and_truth(store: Store) -> None:
    """Round N's start model is round N-1's trained model: its metrics on the frozen validation
    split are round N-1's evaluation, unless the model or the validation truth differs."""
    from pipeline.active_learning.loop import (
        RoundContext,
        RoundSettings,
        _evaluated_before,
        _truth_fingerprints,
    )

    frozen: dict[str, list[int]] = {"real": [], "synthetic": []}
    truth = _truth_fingerprints(store, frozen)
    metrics = {"real": {"body_AP": 0.5}, "synthetic": {"spine_AP": 0.7}}
    open_round(store, 1, strategy="random", budget=3)
    finish_step(store, 1, "retrain", model_version="blaze37-r1", validation=frozen)
    finish_step(store, 1, "evaluate", metrics=metrics, evaluated_truth=truth)

    def ctx(start_model: str) -> RoundContext:
        return RoundContext(store=store, settings=RoundSettings(), number=2, push=print, pull=print,
                            state={"start_model": start_model})  # push/pull: never called here

    assert _evaluated_before(ctx("blaze37-r1"), frozen, truth) == metrics
    assert _evaluated_before(ctx("blaze37-other"), frozen, truth) is None
    changed = {"real": "changed", "synthetic": truth["synthetic"]}  # a validation label was corrected
    assert _evaluated_before(ctx("blaze37-r1"), frozen, changed) is None
    assert _evaluated_before(ctx("blaze37-r1"), {"real": [7], "synthetic": []}, truth) is None
