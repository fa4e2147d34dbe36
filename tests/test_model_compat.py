"""The mmpose compatibility layer: each stand-in only when the real import fails, and RTMPose works.

The "real module present" cases run in a subprocess with a small real package of that name on
sys.path: the shim must then step aside and mmpose must bind the real module's objects.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.model import compat

REPO = Path(__file__).resolve().parents[1]


def _run(code: str, extra_path: Path | None = None) -> dict:
    env_path = [str(REPO)] + ([str(extra_path)] if extra_path else [])
    prelude = f"import sys; sys.path[:0] = {env_path!r}\n"
    out = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True, text=True, timeout=240, cwd=REPO, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_status_names_every_gap_and_real_imports_still_fail_here() -> None:
    status = compat.install()
    assert set(status) == {"mmcv.ops", "mmdet.utils", "torchvision.transforms"}
    for gap, how in status.items():
        assert how in ("real", "shim")
        if how == "shim":  # the stand-in left sys.modules: the process still sees no such module
            assert gap not in sys.modules
            with pytest.raises(ImportError):
                __import__(gap)


def test_mmdet_shim_binds_working_helpers_into_rtmo_head() -> None:
    from mmpose.models.heads.hybrid_heads import rtmo_head

    if compat.STATUS["mmdet.utils"] != "shim":
        pytest.skip("real mmdet installed")
    assert rtmo_head.reduce_mean is compat.reduce_mean
    value = torch.tensor([2.0, 4.0])
    assert torch.equal(rtmo_head.reduce_mean(value), value)  # one process: the mean is itself
    assert "mmdet" not in sys.modules


def test_mmcv_ops_shim_is_a_class_that_refuses_to_build() -> None:
    from mmpose.models.heads.transformer_heads import edpose_head

    if compat.STATUS["mmcv.ops"] != "shim":
        pytest.skip("compiled mmcv ops installed")
    cls = edpose_head.MultiScaleDeformableAttention
    assert cls is compat.MultiScaleDeformableAttention
    assert not isinstance(torch.nn.Linear(1, 1), cls)
    with pytest.raises(RuntimeError, match="mmcv-lite"):
        cls(embed_dims=8)


def test_torchvision_shim_converts_like_topilimage() -> None:
    from mmpose.visualization import simcc_vis

    if compat.STATUS["torchvision.transforms"] != "shim":
        pytest.skip("real torchvision installed")
    image = simcc_vis.ToPILImage()(torch.tensor([[0.0, 0.5, 1.0]]))
    assert image.mode == "L" and image.size == (3, 1)
    assert np.asarray(image).tolist() == [[0, 127, 255]]
    rgb = simcc_vis.ToPILImage()(torch.zeros(3, 2, 4))
    assert rgb.mode == "RGB" and rgb.size == (4, 2)
    assert "torchvision" not in sys.modules


#: Small real packages named like the missing modules; with them importable the shims must step aside.
REAL_STANDINS = {
    "mmdet/__init__.py": "",
    "mmdet/utils.py": (
        "ConfigType = dict\nOptConfigType = dict\ndef reduce_mean(t):\n    return 'real mmdet'\n"
    ),
    "torchvision/__init__.py": "__version__ = '9.9'\n",
    "torchvision/transforms.py": "class ToPILImage:\n    kind = 'real torchvision'\n",
}


def test_shims_step_aside_when_the_real_modules_import(tmp_path: Path) -> None:
    for rel, text in REAL_STANDINS.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    result = _run(
        """
        import json
        from pipeline.model import compat
        from mmpose.models.heads.hybrid_heads import rtmo_head
        from mmpose.visualization import simcc_vis
        print(json.dumps({"status": compat.STATUS, "mmdet": rtmo_head.reduce_mean(None),
                          "torchvision": simcc_vis.ToPILImage.kind}))
        """,
        extra_path=tmp_path,
    )
    assert result["status"]["mmdet.utils"] == "real"
    assert result["status"]["torchvision.transforms"] == "real"
    assert result["mmdet"] == "real mmdet"
    assert result["torchvision"] == "real torchvision"
    # mmcv.ops is still missing in that process, so its shim is still used there
    assert result["status"]["mmcv.ops"] == ("shim" if compat.STATUS["mmcv.ops"] == "shim" else "real")


def test_mmpose_apis_import_and_rtmpose_builds_and_infers() -> None:
    from mmpose.apis import inference_topdown
    from mmpose.datasets.datasets.utils import parse_pose_metainfo
    from mmpose.registry import MODELS
    from mmpose.utils import register_all_modules

    from pipeline.model.configs import build_config
    from pipeline.model.metainfo import dataset_info

    register_all_modules()
    cfg = build_config("tiny", work_dir="unused")
    model = MODELS.build(cfg.model)
    model.cfg = cfg
    model.dataset_meta = parse_pose_metainfo(dataset_info())
    model.eval()
    image = np.zeros((64, 48, 3), np.uint8)
    results = inference_topdown(model, image, bboxes=np.array([[4, 4, 40, 60]], np.float32))
    assert results[0].pred_instances.keypoints.shape == (1, 37, 2)


def test_third_party_checkpoint_with_numpy_meta_loads_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "mmengine_style.pth"
    weights = {"layer.weight": torch.ones(2, 2)}
    torch.save({"state_dict": weights, "meta": {"seed": np.int64(3), "hist": np.arange(3)}}, path)
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        torch.load(path, weights_only=True)
    loaded = compat.load_checkpoint_weights_only(path)
    assert torch.equal(loaded["layer.weight"], weights["layer.weight"])


def test_checkpoint_with_code_objects_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "hook": print}, path)
    with pytest.raises(Exception, match="weights_only|Unsupported global|builtins"):
        compat.load_checkpoint_weights_only(path)
