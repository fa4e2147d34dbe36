"""Unreal's own file formats in the render contract: OpenEXR depth, 8-bit custom-stencil masks, other
rigs' bone names, and the example folder and JSON Schema in docs/ (issue 12)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from schemas.errors import InputError
from schemas.render import RIG_BONE_MAPS, contract_json_schema
from synthetic.reader import DEPTH_NO_HIT_CM, read_sequence, write_depth
from synthetic.renderer import STENCIL_STEP, render_sequence

DOCS = Path(__file__).resolve().parents[1] / "docs"
EXAMPLE = DOCS / "example-sequence"
def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return np.asarray(img)


SMALL = {"frames": 2, "seed": 9, "motion": "twist", "width": 48, "height": 36, "actors": 2}


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    return {
        "npy": render_sequence(root / "npy", **SMALL),  # type: ignore[arg-type]
        "exr": render_sequence(root / "exr", depth_format="exr", mask_format="stencil", **SMALL),  # type: ignore[arg-type]
        "png": render_sequence(root / "png", depth_format="png", **SMALL),  # type: ignore[arg-type]
    }


def test_exr_depth_round_trips_exactly(renders: dict[str, Path]) -> None:
    reference = read_sequence(renders["npy"])
    exr = read_sequence(renders["exr"])
    assert exr.depth_suffix == ".exr" and (renders["exr"] / "depth" / "000000.exr").is_file()
    for f in range(exr.frame_count):
        want, got = reference.load_depth(f), exr.load_depth(f)
        assert want is not None and got is not None and got.dtype == np.float32
        assert np.array_equal(np.isinf(want), np.isinf(got)) and np.isinf(got).any()
        np.testing.assert_array_equal(got[np.isfinite(got)], want[np.isfinite(want)])  # float32: lossless
    png, npy = read_sequence(renders["png"]).load_depth(0), reference.load_depth(0)
    assert png is not None and npy is not None
    hit = np.isfinite(npy)
    assert np.array_equal(np.isfinite(png), hit) and np.abs(png[hit] - npy[hit]).max() <= 0.05  # mm steps


def test_movie_render_queue_style_exr_reads(tmp_path: Path) -> None:
    """RGB EXR with depth in R and the sky as a huge value, as Unreal writes it: far becomes +inf."""
    depth = np.full((36, 48), 1e10, np.float32)
    depth[10:20, 5:9] = 321.5
    rgb = np.stack([np.zeros_like(depth), np.zeros_like(depth), depth], axis=-1)  # B, G, R
    folder = shutil.copytree(EXAMPLE, tmp_path / "seq")
    info = json.loads((folder / "sequence.json").read_text())
    info.update(image_width=48, image_height=36)
    (folder / "sequence.json").write_text(json.dumps(info))
    for sub in ("rgb", "mask"):
        for p in (folder / sub).iterdir():
            img = _read(p)
            cv2.imwrite(str(p), cv2.resize(img, (48, 36), interpolation=cv2.INTER_NEAREST))
    for f in range(3):
        assert cv2.imwrite(str(folder / "depth" / f"{f:06d}.exr"), rgb)
    got = read_sequence(folder).load_depth(1)
    assert got is not None and got[12, 6] == pytest.approx(321.5)
    assert np.isinf(got[0, 0]) and DEPTH_NO_HIT_CM < 1e10


def test_write_depth_rejects_unknown_formats(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown depth format"):
        write_depth(tmp_path / "d.tif", np.zeros((2, 2), np.float32))


def test_custom_stencil_masks_map_to_actors(renders: dict[str, Path]) -> None:
    ids = read_sequence(renders["npy"])
    stencil = read_sequence(renders["exr"])
    assert [a.stencil for a in stencil.info.actors] == [STENCIL_STEP, 2 * STENCIL_STEP]
    raw = _read(renders["exr"] / "mask" / "000000.png")
    assert raw.dtype == np.uint8 and raw.ndim == 3  # grey RGB, as a post-process material writes it
    assert set(np.unique(raw).tolist()) <= {0, STENCIL_STEP, 2 * STENCIL_STEP}
    for f in range(ids.frame_count):
        want, got = ids.load_mask(f), stencil.load_mask(f)
        assert want is not None and got is not None
        np.testing.assert_array_equal(got, want)
        assert {1, 2} <= set(np.unique(got).tolist())


def test_stencil_mask_defects_are_named(tmp_path: Path, renders: dict[str, Path]) -> None:
    folder = shutil.copytree(renders["exr"], tmp_path / "seq")
    path = folder / "mask" / "000001.png"
    img = _read(path)
    img[0, 0] = (1, 2, 3)  # a colour, not a stencil value
    cv2.imwrite(str(path), img)
    with pytest.raises(InputError, match="different R, G, B") as err:
        read_sequence(folder).load_mask(1)
    assert err.value.path == str(path)
    info = json.loads((folder / "sequence.json").read_text())
    del info["actors"][1]["stencil"]
    (folder / "sequence.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="stencil value for every actor"):
        read_sequence(folder)


def test_other_rigs_are_renamed_or_refused_with_the_missing_bones(tmp_path: Path) -> None:
    folder = shutil.copytree(EXAMPLE, tmp_path / "seq")
    lines = [json.loads(line) for line in (folder / "bones.jsonl").read_text().splitlines()]
    renamed = {v: k for k, v in RIG_BONE_MAPS["metahuman"].items()}
    for line in lines:
        line["bones"] = {renamed.get(k, k): v for k, v in line["bones"].items()}
    (folder / "bones.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    info = json.loads((folder / "sequence.json").read_text())
    (folder / "sequence.json").write_text(json.dumps(dict(info, rig="metahuman")))
    seq = read_sequence(folder)
    assert "eye_l" in seq.bones[(0, 1)].bones and "FACIAL_L_Eye" not in seq.bones[(0, 1)].bones
    # a Mixamo rig has three spine bones and one neck bone: refused, naming what is missing
    mixamo = {v: k for k, v in RIG_BONE_MAPS["mixamo"].items()}
    for line in lines:
        line["bones"] = {mixamo[k]: v for k, v in line["bones"].items() if k in mixamo}
    (folder / "bones.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (folder / "sequence.json").write_text(json.dumps(dict(info, rig="mixamo")))
    with pytest.raises(InputError, match="spine_04") as err:
        read_sequence(folder)
    assert err.value.path.endswith("bones.jsonl") and err.value.line == 1
    (folder / "sequence.json").write_text(json.dumps(dict(info, rig="daz_genesis")))
    with pytest.raises(InputError, match="unknown rig"):
        read_sequence(folder)


def test_json_schema_in_docs_is_current_and_validates_the_example() -> None:
    on_disk = json.loads((DOCS / "render-contract.schema.json").read_text())
    regenerate = "python -m schemas.render > docs/render-contract.schema.json"
    assert on_disk == contract_json_schema(), regenerate
    props = on_disk["properties"]
    jsonschema.Draft202012Validator.check_schema(on_disk)
    jsonschema.validate(json.loads((EXAMPLE / "sequence.json").read_text()), props["sequence.json"])
    for name in ("cameras.jsonl", "bones.jsonl"):
        for line in (EXAMPLE / name).read_text().splitlines():
            jsonschema.validate(json.loads(line), props[name])
    bad = json.loads((EXAMPLE / "bones.jsonl").read_text().splitlines()[0])
    del bad["bones"]["spine_03"]
    with pytest.raises(jsonschema.ValidationError, match="spine_03"):
        jsonschema.validate(bad, props["bones.jsonl"])


def test_example_folder_reads_and_its_truth_projects() -> None:
    seq = read_sequence(EXAMPLE)
    assert seq.depth_suffix == ".exr" and seq.info.schema_version == "1.1" and seq.actor_ids == [1, 2]
    truth = np.load(EXAMPLE / "ground_truth_3d.npz")["landmarks_ue_cm"]
    gt = json.loads((EXAMPLE / "ground_truth.json").read_text())
    for ann in gt["annotations"]:
        f = ann["image_id"] - 1
        uv, _ = seq.camera(f).project(truth[f, ann["actor"] - 1])
        kps = np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)
        on = kps[:, 2] > 0
        np.testing.assert_allclose(kps[on, :2], uv[on], atol=0.01)
        mask = seq.load_mask(f)
        assert mask is not None and (mask == ann["actor"]).sum() == ann["area"]


def test_version_1_0_folders_still_read(tmp_path: Path) -> None:
    """Folders written before 1.1 (no rig, no stencil, .npy depth) read unchanged: nothing to migrate."""
    folder = shutil.copytree(EXAMPLE, tmp_path / "old")
    info = json.loads((folder / "sequence.json").read_text())
    info["schema_version"] = "1.0"
    del info["rig"]
    for actor in info["actors"]:
        del actor["stencil"]
    (folder / "sequence.json").write_text(json.dumps(info))
    for f in range(3):
        depth = read_sequence(EXAMPLE).load_depth(f)
        assert depth is not None
        (folder / "depth" / f"{f:06d}.exr").unlink()
        np.save(folder / "depth" / f"{f:06d}.npy", depth)
        mask = read_sequence(EXAMPLE).load_mask(f)
        assert mask is not None
        cv2.imwrite(str(folder / "mask" / f"{f:06d}.png"), mask.astype(np.uint8))
    seq = read_sequence(folder)
    assert seq.info.rig == "ue5_mannequin" and seq.info.stencil_to_actor is None
    assert seq.depth_suffix == ".npy"
    np.testing.assert_array_equal(seq.load_mask(2), read_sequence(EXAMPLE).load_mask(2))
