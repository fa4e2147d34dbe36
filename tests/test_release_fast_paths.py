"""The bulk paths a release uses give exactly the bytes of the one-by-one ones.

Releases must be byte-for-byte reproducible and equal to `export_coco`'s bytes; the bulk
rounding (numpy) and JSON formatting (pipeline/coco_json.py) are only allowed because they agree
with Python's `round` and `json.dumps` on every value, awkward ones included.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.coco_json import number_rows
from pipeline.coco_writer import round_like_python
from pipeline.export import encode_each, encode_json, encoded_annotations, label_annotation, label_annotations
from pipeline.release.build import create_release, verify_release
from pipeline.store import Label, Store
from schemas.keypoints import NUM_KEYPOINTS

#: Ties at 3 decimals (exact and near), signed zeros, tiny, huge, not finite.
AWKWARD = [0.0625, 1.0005, 2.675, 99.9995, 255.99951, 1.0015, -0.0001, -0.0004, -0.0006, 0.0, -0.0,
           1e-7, 3e-4, 0.1 + 0.2, 7.5, 99999.9996, 123456789.1234567, 5e11 + 0.1235, 2e16,
           float("nan"), float("inf"), -float("inf")]


#: The awkward values the fast formatter itself writes (finite, whole part below 100,000).
WRITTEN_FAST = [v for v in AWKWARD if np.isfinite(v) and abs(v) < 99999]


def _values(rng: random.Random, n: int, awkward: list[float] = AWKWARD) -> list[float]:
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.3:
            out.append(rng.choice(awkward))
        elif r < 0.5:
            out.append(round(rng.uniform(-50, 5000), rng.choice([0, 1, 2, 3, 4])))
        else:
            out.append(rng.uniform(-50, 5000))
    return out


def test_round_like_python_is_round() -> None:
    rng = random.Random(3)
    values = _values(rng, 20000) + [k / 2000 for k in range(-3000, 3000)]  # every 3-decimal tie
    got = round_like_python(np.array(values).reshape(-1, 4), 3).reshape(-1).tolist()
    assert [repr(v) for v in got] == [repr(round(v, 3)) for v in values]


def test_number_rows_is_json_dumps() -> None:
    rng = random.Random(5)
    flags = np.arange(NUM_KEYPOINTS * 3) % 3 == 2
    rows = []
    for n in range(400):
        row = [round(v, 3) for v in _values(rng, NUM_KEYPOINTS * 3, AWKWARD if n % 2 else WRITTEN_FAST)]
        row = [float(rng.choice([0, 1, 2, -1, 7])) if flag else v for v, flag in zip(row, flags, strict=True)]
        rows.append(row)
    texts = number_rows(np.array(rows), flags)
    fast = 0
    for row, text in zip(rows, texts, strict=True):
        if text is None:
            continue  # not finite or huge: the caller's json.dumps writes it
        fast += 1
        want = json.dumps([int(v) if flag else v for v, flag in zip(row, flags, strict=True)],
                          separators=(",", ":"))
        assert text == want
    simple = [[round(v, 3) for v in np.random.default_rng(1).uniform(-9, 900, NUM_KEYPOINTS * 3)]]
    assert number_rows(np.array(simple), np.zeros(NUM_KEYPOINTS * 3, bool))[0] == json.dumps(
        simple[0], separators=(",", ":"))
    assert fast == 200  # the rows without non-finite or huge values


def _label(n: int, rng: random.Random) -> Label:
    kps = []
    for _ in range(NUM_KEYPOINTS):
        x, y = _values(rng, 2)
        kps += [x, y, float(rng.choice([0, 1, 2]))]
    return Label(image_id=n // 2, image_path=f"/data/{n // 2}.png", width=640, height=480,
                 image_source="real", subset="coco", group_key="g", frame_index=None, instance_id=n,
                 instance_key=f"p{n % 2}", revision_id=1000 + n, keypoints=kps,
                 bbox=_values(rng, 4), area=rng.choice([12.3456, 0.0005, 2.0625]), source="human",
                 model_version=None, annotator=rng.choice([None, 'a "quoted" \u00e9']),
                 round=rng.choice([None, 1]), uncertainty=None)


def test_bulk_annotations_are_the_one_by_one_ones() -> None:
    rng = random.Random(11)
    labels = [_label(n, rng) for n in range(300)]
    one_by_one = [label_annotation(lab) for lab in labels]
    assert [encode_json(a) for a in label_annotations(labels)] == [encode_json(a) for a in one_by_one]
    assert encoded_annotations(labels) == [encode_json(a) for a in one_by_one]
    assert encoded_annotations([]) == [] and label_annotations([]) == []


def test_encode_each_is_one_call_per_value() -> None:
    values = [{"a": 1, "b": [1.5, None]}, "x", 3, {"s": "\x00spinetrack-separator\x00"}, []]
    assert encode_each(values) == [encode_json(v) for v in values]
    assert encode_each([]) == []


def _one_image_store(store: Store, folder: Path, count: int = 3) -> None:
    from PIL import Image as PILImage

    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        path = folder / f"img-{n}.png"
        PILImage.new("RGB", (32, 24), (n, 9, 9)).save(path)
        image = store.add_image(path, source="real", subset="coco", group_key=f"g{n}", width=32, height=24)
        store.add_revision(store.instance_id(image, "p0"), [1.0] * (NUM_KEYPOINTS * 3), [1, 1, 9, 9],
                           source="human", annotator="a")


def test_copied_images_are_hard_links_on_one_file_system(store: Store, tmp_path: Path) -> None:
    _one_image_store(store, tmp_path / "images")
    rel = create_release(store, "1.0.0", copy_images=True)
    images = sorted((rel.path / "images").iterdir())
    # linked to the store's own read-only copy (pipeline/store/objects.py), never to the source
    assert len(images) == 3 and all(p.stat().st_nlink == 2 for p in images)
    sources = {p.stat().st_ino for p in (tmp_path / "images").iterdir()}
    assert not sources & {p.stat().st_ino for p in images}
    assert verify_release(rel.path) == []


def test_copied_images_are_copies_across_file_systems(store: Store, tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system (/dev/shm) to put the releases on")
    folder = Path(tempfile.mkdtemp(prefix="spinetrack-test-", dir=shm))
    try:
        _one_image_store(store, tmp_path / "images")
        (store.home / "releases").symlink_to(folder)  # releases on another file system than the store
        rel = create_release(store, "1.0.0", copy_images=True)
        images = sorted((rel.path / "images").iterdir())
        assert len(images) == 3 and all(p.stat().st_nlink == 1 for p in images)  # EXDEV: copied
        assert all(not p.stat().st_mode & 0o222 for p in images)  # copies are read-only too
        assert verify_release(rel.path) == []
    finally:
        shutil.rmtree(folder, ignore_errors=True)
