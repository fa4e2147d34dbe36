"""Round bookkeeping: steps are recorded in order, a re-opened round resumes, reports render."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.rounds import (
    current_model,
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
    metrics = {"all_AP": 0.4, "body_AP": 0.5, "feet_AP": 0.3, "spine_AP": 0.6}
    finish_step(store, 1, "evaluate", metrics=metrics, human_labels=3, auto_accepted=7)
    finish_step(store, 1, "record")
    assert current_model(store) == "tiny-r1"
    assert next_round_number(store) == 2
    table = metrics_table(history(store))
    assert "| 1 | random | 3 | 3 | 7 | tiny-r1 | 0.400 | 0.500 | 0.300 | 0.600 |" in table
    png = plot_learning_curve(history(store), tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
