"""The render contract reader: a valid folder reads; every kind of defect names its file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from schemas.errors import InputError
from schemas.render import REQUIRED_BONES, SCHEMA_VERSION, check_schema_version
from synthetic.reader import content_sha256, read_sequence

W, H = 40, 32


def _bones(frame: int) -> dict[str, list[float]]:
    # a column of bones 1 cm apart, moving 1 cm per frame: only the names matter to the reader
    return {name: [float(frame), 0.0, 100.0 + i] for i, name in enumerate(REQUIRED_BONES)}


def write_sequence(folder: Path, frames: int = 3, *, depth: str | None = "npy", mask: bool = True) -> Path:
    """A small hand-written sequence folder that follows docs/render-contract.md."""
    folder.mkdir(parents=True)
    info = {
        "schema_version": SCHEMA_VERSION,
        "sequence_id": "seq-test",
        "fps": 30,
        "image_width": W,
        "image_height": H,
        "units": "cm",
        "axes": "unreal",
        "subject": {"id": "s1", "height_cm": 175.0, "mass_kg": 70.0},
        "actors": [{"id": 1, "subject_id": "s1"}],
        "frame_count": frames,
    }
    (folder / "sequence.json").write_text(json.dumps(info))
    with open(folder / "cameras.jsonl", "w") as fh:
        for f in range(frames):
            fh.write(json.dumps({"frame": f, "hfov_deg": 60.0, "location": [-300.0, 0.0, 100.0],
                                 "rotation": {"pitch": 0.0, "yaw": 0.0, "roll": 0.0}}) + "\n")
    with open(folder / "bones.jsonl", "w") as fh:
        for f in range(frames):
            fh.write(json.dumps({"frame": f, "actor": 1, "bones": _bones(f)}) + "\n")
    for sub in ["rgb"] + (["depth"] if depth else []) + (["mask"] if mask else []):
        (folder / sub).mkdir()
    for f in range(frames):
        Image.fromarray(np.full((H, W, 3), f, np.uint8)).save(folder / "rgb" / f"{f:06d}.png")
        if depth == "npy":
            np.save(folder / "depth" / f"{f:06d}.npy", np.full((H, W), np.inf, np.float32))
        elif depth == "png":
            mm = np.zeros((H, W), np.uint16)
            mm[4, 5] = 2345
            Image.fromarray(mm).save(folder / "depth" / f"{f:06d}.png")
        if mask:
            m = np.zeros((H, W), np.uint8)
            m[10:20, 15:25] = 1
            Image.fromarray(m).save(folder / "mask" / f"{f:06d}.png")
    return folder


def _rewrite_line(path: Path, lineno: int, mutate) -> None:  # type: ignore[no-untyped-def]
    lines = path.read_text().splitlines(keepends=True)
    rec = json.loads(lines[lineno - 1])
    mutate(rec)
    lines[lineno - 1] = json.dumps(rec) + "\n"
    path.write_text("".join(lines))


def test_valid_folder_reads(tmp_path: Path) -> None:
    seq = read_sequence(write_sequence(tmp_path / "s"))
    assert seq.sequence_id == "seq-test" and seq.frame_count == 3 and seq.actor_ids == [1]
    cam = seq.camera(1)
    assert cam.fx == pytest.approx((W / 2) / np.tan(np.radians(30.0)))
    assert seq.bone_positions(1).shape == (3, len(REQUIRED_BONES), 3)
    assert seq.bone_positions(1)[2, 0, 0] == 2.0
    depth = seq.load_depth(0)
    assert depth is not None and depth.dtype == np.float32 and np.isinf(depth).all()
    mask = seq.load_mask(0)
    assert mask is not None and mask[15, 20] == 1 and mask[0, 0] == 0


def test_depth_png_is_millimetres_with_zero_as_no_hit(tmp_path: Path) -> None:
    seq = read_sequence(write_sequence(tmp_path / "s", depth="png"))
    depth = seq.load_depth(0)
    assert depth is not None
    assert depth[4, 5] == pytest.approx(234.5)  # 2345 mm -> 234.5 cm
    assert np.isinf(depth[0, 0])


def test_content_hash_changes_with_content(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "s")
    first, files = content_sha256(read_sequence(folder))
    assert "rgb/000002.png" in files and len(first) == 64
    assert content_sha256(read_sequence(folder))[0] == first
    Image.fromarray(np.full((H, W, 3), 99, np.uint8)).save(folder / "rgb" / "000001.png")
    assert content_sha256(read_sequence(folder))[0] != first


def test_missing_frame_file(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "s")
    (folder / "rgb" / "000001.png").unlink()
    with pytest.raises(InputError, match=r"rgb/000001\.png.*missing frame file") as err:
        read_sequence(folder)
    assert err.value.field == "frame"


def test_missing_mask_frame(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "s")
    (folder / "mask" / "000002.png").unlink()
    with pytest.raises(InputError, match=r"mask/000002\.png"):
        read_sequence(folder)


def test_nan_in_camera_line(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "s")
    text = (folder / "cameras.jsonl").read_text().splitlines()
    text[1] = text[1].replace('"hfov_deg": 60.0', '"hfov_deg": NaN')
    (folder / "cameras.jsonl").write_text("\n".join(text) + "\n")
    with pytest.raises(InputError) as err:
        read_sequence(folder)
    assert err.value.line == 2 and err.value.field == "hfov_deg"
    assert str(err.value).startswith(str(folder / "cameras.jsonl") + ":2: field 'hfov_deg'")
    assert "finite" in str(err.value)


def test_nan_in_camera_location(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "s")
    _rewrite_line(folder / "cameras.jsonl", 3, lambda r: r["location"].__setitem__(1, float("nan")))
    with pytest.raises(InputError) as err:
        read_sequence(folder)
    assert err.value.line == 3 and err.value.field == "location.1"


def test_partial_intrinsics(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "s")
    _rewrite_line(folder / "cameras.jsonl", 1, lambda r: r.update(fx=100.0))
    with pytest.raises(InputError, match="fx, fy, cx, cy") as err:
        read_sequence(folder)
    assert err.value.line == 1


def test_wrong_bone_names(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "s")

    def rename(rec: dict) -> None:  # type: ignore[type-arg]
        rec["bones"]["spine01"] = rec["bones"].pop("spine_01")

    _rewrite_line(folder / "bones.jsonl", 2, rename)
    with pytest.raises(InputError) as err:
        read_sequence(folder)
    assert err.value.line == 2 and err.value.field == "bones"
    assert "spine_01" in str(err.value) and "'spine01' -> 'spine_01'?" in str(err.value)


def test_truncated_jsonl(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "s")
    path = folder / "bones.jsonl"
    data = path.read_text()
    path.write_text(data[: len(data) - 40])  # cut off in the middle of the last line
    with pytest.raises(InputError, match="truncated") as err:
        read_sequence(folder)
    assert err.value.line == 3 and err.value.path.endswith("bones.jsonl")


def test_frame_count_mismatch_cameras(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "s")
    lines = (folder / "cameras.jsonl").read_text().splitlines()
    (folder / "cameras.jsonl").write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(InputError, match=r"frame count mismatch.*missing frames \[2\]") as err:
        read_sequence(folder)
    assert err.value.path.endswith("cameras.jsonl")


def test_extra_frame_file(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "s")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(folder / "rgb" / "000003.png")
    with pytest.raises(InputError, match="beyond frame_count=3"):
        read_sequence(folder)


def test_duplicate_bone_line(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "s")
    path = folder / "bones.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[0]]) + "\n")
    with pytest.raises(InputError, match="duplicate frame 0 actor 1") as err:
        read_sequence(folder)
    assert err.value.line == 4


def test_undeclared_actor(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "s")
    _rewrite_line(folder / "bones.jsonl", 1, lambda r: r.update(actor=2))
    with pytest.raises(InputError, match="actor 2 not declared") as err:
        read_sequence(folder)
    assert err.value.field == "actor"


def test_wrong_image_size(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "s")
    Image.fromarray(np.zeros((H + 1, W, 3), np.uint8)).save(folder / "rgb" / "000000.png")
    with pytest.raises(InputError, match=r"000000\.png.*differs from sequence\.json"):
        read_sequence(folder)


@pytest.mark.parametrize("version", ["2.0", "0.9", "1.0-beta", ""])
def test_unknown_schema_version(tmp_path: Path, version: str) -> None:
    folder = write_sequence(tmp_path / "s")
    info = json.loads((folder / "sequence.json").read_text())
    info["schema_version"] = version
    (folder / "sequence.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="unsupported schema_version") as err:
        read_sequence(folder)
    assert err.value.field == "schema_version"


def test_newer_minor_version_reads(tmp_path: Path) -> None:
    """A 1.x folder from a newer exporter reads: minor versions only add optional fields."""
    for accepted in ("1", "1.0", "1.3", "1.12"):
        check_schema_version(accepted)  # raises ValueError otherwise
    folder = write_sequence(tmp_path / "s")
    info = json.loads((folder / "sequence.json").read_text())
    info.update(schema_version="1.3", exporter_note="a field this SpineTrack does not know yet")
    (folder / "sequence.json").write_text(json.dumps(info))
    seq = read_sequence(folder)
    assert seq.frame_count == 3 and seq.actor_ids == [1]
    assert seq.bone_positions(1).shape == (3, len(REQUIRED_BONES), 3)
    with pytest.raises(ValueError, match="unsupported schema_version '2.0'"):
        check_schema_version("2.0")  # the same reader refuses the next major version


def test_bad_units_and_missing_subject_field(tmp_path: Path) -> None:
    folder = write_sequence(tmp_path / "s")
    info = json.loads((folder / "sequence.json").read_text())
    info["units"] = "m"
    (folder / "sequence.json").write_text(json.dumps(info))
    with pytest.raises(InputError) as err:
        read_sequence(folder)
    assert err.value.field == "units"
    info["units"] = "cm"
    del info["subject"]["height_cm"]
    (folder / "sequence.json").write_text(json.dumps(info))
    with pytest.raises(InputError) as err:
        read_sequence(folder)
    assert err.value.field == "subject.height_cm"


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a directory"):
        read_sequence(tmp_path / "nope")
