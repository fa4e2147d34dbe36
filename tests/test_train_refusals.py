"""`spinetrack train` refuses, in one line with exit code 2, what would silently waste a run:

- `--init-checkpoint` with a checkpoint of another architecture (almost nothing would load);
- a GPU-sized default schedule (rtmpose-s: 100,000 iterations at batch 256) on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from flows.app import app
from flows.cli import _register
from pipeline.model.configs import build_config
from pipeline.model.init_checkpoint import MIN_MATCHED_SHARE, init_from_checkpoint
from pipeline.model.registry import build_model
from schemas.errors import InputError


def _checkpoint(config: str, path: Path, tmp_path: Path) -> Path:
    model = build_model(build_config(config, work_dir=tmp_path / config))
    torch.save({"state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}}, path)
    return path


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    other = _checkpoint("rtmpose-s", tmp_path / "rtmpose-s.pth", tmp_path)
    tiny = build_model(build_config("tiny", work_dir=tmp_path / "tiny"))
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    with pytest.raises(InputError, match=r"only \d+% of the model's weights match it") as refused:
        init_from_checkpoint(tiny, other)
    assert "rtmpose-s.pth" in str(refused.value) and "--config" in str(refused.value)
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())  # nothing loaded


def test_a_checkpoint_of_the_same_architecture_loads(tmp_path: Path) -> None:
    same = _checkpoint("tiny", tmp_path / "tiny.pth", tmp_path)
    model = build_model(build_config("tiny", work_dir=tmp_path / "tiny"))
    report = init_from_checkpoint(model, same)
    assert not report.shape_mismatch and len(report.copied) == len(model.state_dict())
    assert MIN_MATCHED_SHARE == 0.5


@pytest.mark.parametrize(("flags", "missing"), [([], "--iters and --batch-size"),
                                                (["--iters", "50"], "--batch-size")])
def test_a_gpu_schedule_on_cpu_is_refused(home: Path, flags: list[str], missing: str) -> None:
    _register()
    result = CliRunner().invoke(app, ["train", "--config", "rtmpose-s", *flags])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "100,000 iterations at batch 256" in lines[0]
    assert f"give {missing} " in lines[0]
