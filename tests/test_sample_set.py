"""Rendering a sample set is resumable: finished sequences are kept, broken ones re-rendered."""

from __future__ import annotations

from pathlib import Path

from synthetic.sample_set import SequenceSpec, is_complete, render_set


def test_render_set_skips_finished_and_redoes_partial(tmp_path: Path) -> None:
    specs = [SequenceSpec("bend", 1, 3, 96, 80), SequenceSpec("walk", 2, 2, 96, 80)]
    first, second = render_set(tmp_path, specs)
    assert is_complete(first, 3) and is_complete(second, 2)
    stamp = (first / "ground_truth.json").stat().st_mtime_ns
    (second / "ground_truth.json").unlink()  # a crash before the renderer finished
    render_set(tmp_path, specs)
    assert (first / "ground_truth.json").stat().st_mtime_ns == stamp
    assert is_complete(second, 2)
    assert not is_complete(first, 4)


def test_render_set_draws_the_requested_character(tmp_path: Path) -> None:
    import json

    (folder,) = render_set(tmp_path, [SequenceSpec("twist", 3, 1, 48, 40, character="opensim")])
    assert json.loads((folder / "sequence.json").read_text())["renderer"].endswith("character=opensim")
    (default,) = render_set(tmp_path / "d", [SequenceSpec("twist", 3, 1, 48, 40)])
    assert json.loads((default / "sequence.json").read_text())["renderer"].endswith("character=mannequin")
