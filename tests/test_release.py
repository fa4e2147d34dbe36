"""Releases: grouped and stable splits, byte-for-byte reproducible, immutable, with a changelog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image as PILImage
from pycocotools.coco import COCO

from pipeline.release.build import (
    ReleaseError,
    create_release,
    get_release,
    list_releases,
    reproduce_release,
    verify_release,
)
from pipeline.splits import assign_splits, assigned_splits, hash_split, parse_fractions
from pipeline.store import Store
from schemas.keypoints import INDEX, NAMES, NUM_KEYPOINTS
from schemas.manifest import check_semver, load_manifest, semver_key

W, H = 64, 48


def _kps(seed: int, hidden: tuple[int, ...] = ()) -> list[float]:
    out: list[float] = []
    for i in range(NUM_KEYPOINTS):
        v = 0 if i in hidden else (1 if i % 5 == 0 else 2)
        out += [0.0, 0.0, 0] if v == 0 else [float(5 + (seed + i) % 50), float(4 + (seed * 3 + i) % 40), v]
    return out


def _add_group(store: Store, tmp: Path, group: str, source: str, subset: str, frames: int,
               revision_source: str, *, first_colour: int) -> list[int]:
    """Add `frames` images of one group, one labelled person each; returns instance ids."""
    ids = []
    for f in range(frames):
        colour = first_colour + f
        path = tmp / f"{group}-{f}.png"
        PILImage.new("RGB", (W, H), (colour % 256, colour // 256, 7)).save(path)
        image = store.add_image(path, source=source, subset=subset, group_key=group, width=W, height=H,
                                frame_index=f)
        inst = store.instance_id(image, "p0")
        store.add_revision(inst, _kps(colour, hidden=(INDEX["left_latissimus"],)), [2, 3, 50, 40],
                           source=revision_source,
                           model_version="m-r0" if revision_source == "pseudo-accepted" else None,
                           annotator="ann1" if revision_source == "human" else None,
                           round=1 if revision_source != "synthetic" else None)
        ids.append(inst)
    return ids


@pytest.fixture()
def filled(store: Store, tmp_path: Path) -> Store:
    """12 synthetic sequences of 3 frames and 8 real videos of 2 frames (coco and yoga subsets)."""
    images = tmp_path / "images"
    images.mkdir()
    for g in range(12):
        _add_group(store, images, f"seq-{g:02d}", "synthetic", "train-unreal", 3, "synthetic",
                   first_colour=10 * g)
    for g in range(8):
        _add_group(store, images, f"video-{g:02d}", "real", "coco" if g % 2 else "yoga", 2,
                   "pseudo-accepted" if g % 3 == 0 else "human", first_colour=500 + 10 * g)
    return store


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_release_is_loadable_grouped_and_counted(filled: Store) -> None:
    rel = create_release(filled, "1.0.0", notes="first")
    root = filled.home / "releases" / "1.0.0"
    assert rel.path == root and list_releases(filled) == ["1.0.0"]
    names = sorted(p.name for p in (root / "annotations").iterdir())
    assert names == sorted(
        f"{split}{suffix}.json" for split in ("train", "val", "test")
        for suffix in ("", "-real", "-synthetic", "-real-coco", "-real-yoga")
    )
    seen_groups: dict[str, str] = {}
    total = 0
    for split in ("train", "val", "test"):
        coco = COCO(str(root / "annotations" / f"{split}.json"))
        assert coco.loadCats(1)[0]["keypoints"] == list(NAMES)
        for ann in coco.loadAnns(coco.getAnnIds()):
            assert len(ann["keypoints"]) == 3 * NUM_KEYPOINTS
            image = coco.loadImgs(ann["image_id"])[0]
            assert (root / image["file_name"]).is_file()  # images copied next to the annotations
            group = image["spinetrack"]["group"]
            assert seen_groups.setdefault(group, split) == split, f"group {group} straddles splits"
        total += len(coco.getAnnIds())
        per_source = sum(len(COCO(str(root / "annotations" / f"{split}-{src}.json")).getAnnIds())
                         for src in ("real", "synthetic"))
        assert per_source == len(coco.getAnnIds())
        assert rel.manifest.counts.splits[split].instances == len(coco.getAnnIds())
    assert total == 12 * 3 + 8 * 2
    assert seen_groups == assigned_splits(filled)  # the store remembers every group's split
    counts = rel.manifest.counts
    assert sum(counts.revision_sources[s].get("pseudo-accepted", 0) for s in counts.splits) == 3 * 2
    lat = counts.keypoint_visibility["left_latissimus"]
    assert (lat.v0, lat.v1, lat.v2) == (total, 0, 0)
    nose = counts.keypoint_visibility["nose"]  # index 0: 0 % 5 == 0 -> occluded
    assert (nose.v0, nose.v1, nose.v2) == (0, total, 0)
    assert [m.name for m in rel.manifest.model_versions] == ["m-r0"]
    assert rel.manifest.snapshot_id == filled.snapshot_id()
    assert rel.manifest.changelog.added == sorted(lab.instance_id for lab in filled.current_labels())
    card = (root / "README.md").read_text()
    assert "# SpineTrack 1.0.0" in card and "spine_01" in card and "first" in card
    assert verify_release(root) == []
    manifest = load_manifest(root / "manifest.json")
    assert manifest == rel.manifest
    files = {f.path: f.sha256 for f in manifest.files}
    assert "annotations/train.json" in files and sum(p.startswith("images/") for p in files) == 12 * 3 + 8 * 2


def test_no_timestamp_in_coco_files(filled: Store) -> None:
    rel = create_release(filled, "0.1.0")
    text = (rel.path / "annotations" / "train.json").read_text()
    assert str(rel.manifest.created_at.year) not in json.dumps(json.loads(text)["info"])
    assert "created" not in text and "date" not in text


def test_reproduce_is_byte_for_byte_after_the_store_moved_on(filled: Store, tmp_path: Path) -> None:
    rel = create_release(filled, "1.0.0")
    before = _files(rel.path)
    # the store moves on: a relabel and a new group; 1.0.0 must still rebuild exactly
    inst = filled.current_labels()[0].instance_id
    filled.add_revision(inst, _kps(999), [1, 1, 30, 30], source="human", annotator="ann2")
    _add_group(filled, tmp_path / "images", "seq-new", "synthetic", "train-unreal", 2, "synthetic",
               first_colour=900)
    out = reproduce_release(filled, "1.0.0", tmp_path / "again")
    assert _files(out) == before
    assert verify_release(out) == []
    tampered = out / "annotations" / "train.json"
    tampered.chmod(0o644)
    tampered.write_text(tampered.read_text().replace('"iscrowd":0', '"iscrowd":1', 1))
    assert verify_release(out) == ["annotations/train.json: content differs from the manifest"]
    with pytest.raises(ReleaseError, match="not empty"):
        reproduce_release(filled, "1.0.0", tmp_path / "again")


def test_existing_version_is_refused_and_versions_are_semver(filled: Store) -> None:
    create_release(filled, "1.0.0")
    card = (filled.home / "releases" / "1.0.0" / "README.md").read_bytes()
    with pytest.raises(ReleaseError, match=r"release 1\.0\.0 already exists.*immutable"):
        create_release(filled, "1.0.0", notes="again")
    assert (filled.home / "releases" / "1.0.0" / "README.md").read_bytes() == card
    with pytest.raises(ValueError, match="not a semantic version"):
        create_release(filled, "v2")
    with pytest.raises(ReleaseError, match="higher version than its parent"):
        create_release(filled, "0.9.0")
    with pytest.raises(ReleaseError, match="parent release '3.0.0' does not exist"):
        create_release(filled, "4.0.0", parent="3.0.0")
    assert list_releases(filled) == ["1.0.0"]
    assert not [p for p in (filled.home / "releases").iterdir() if p.name.startswith(".")]


def test_splits_are_stable_and_changelog_names_changes(filled: Store, tmp_path: Path) -> None:
    first = create_release(filled, "1.0.0")
    old_splits = assigned_splits(filled)
    labels = filled.current_labels()
    relabelled = labels[0].instance_id
    filled.add_revision(relabelled, _kps(777), [1, 1, 30, 30], source="human", annotator="ann2")
    added = _add_group(filled, tmp_path / "images", "video-new", "real", "coco", 2, "human",
                       first_colour=1500)
    # new fractions apply to new groups only: old groups keep their split
    second = create_release(filled, "1.1.0", fractions={"train": 0.0, "val": 0.0, "test": 1.0})
    new_splits = assigned_splits(filled)
    assert {g: new_splits[g] for g in old_splits} == old_splits
    assert new_splits["video-new"] == "test"
    assert second.manifest.parent == "1.0.0"
    log = second.manifest.changelog
    assert (log.parent, log.added, log.relabelled, log.removed) == ("1.0.0", sorted(added), [relabelled], [])
    assert second.manifest.snapshot_id != first.manifest.snapshot_id
    # the instance kept its split; its annotation id (instance id) is stable across versions
    split_old = next(s for s, pairs in first.manifest.revisions.items()
                     if any(i == relabelled for i, _ in pairs))
    split_new = next(s for s, pairs in second.manifest.revisions.items()
                     if any(i == relabelled for i, _ in pairs))
    assert split_old == split_new
    assert "relabelled instances (1)" in (second.path / "README.md").read_text()
    assert get_release(filled, "1.0.0").manifest == first.manifest


def test_split_assignment_rules(store: Store) -> None:
    assert hash_split("seq-a") == hash_split("seq-a")
    keys = [f"g{i}" for i in range(2000)]
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    share = sum(hash_split(k, fractions) == "train" for k in keys) / len(keys)
    assert 0.75 < share < 0.85
    got = assign_splits(store, ["a", "b"], pinned={"a": "test"})
    assert got["a"] == "test"
    assert assign_splits(store, ["a", "b"], {"train": 0, "val": 1, "test": 0}) == got
    with pytest.raises(ValueError, match="already in split 'test'"):
        assign_splits(store, ["a"], pinned={"a": "train"})
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(store, ["c"], {"train": 0.5, "val": 0.1, "test": 0.1})
    assert parse_fractions("80/10/10") == pytest.approx({"train": 0.8, "val": 0.1, "test": 0.1})


def test_semver_order() -> None:
    order = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0", "1.0.1",
             "1.10.0"]
    assert sorted(reversed(order), key=semver_key) == order
    for bad in ("1.0", "01.0.0", "1.0.0-", "latest"):
        with pytest.raises(ValueError):
            check_semver(bad)


@pytest.mark.slow  # the first Prefect flow of a process starts a temporary server (~20-30 s)
def test_cli_release_refuse_reproduce_verify(prefect_harness: None, filled: Store, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.app import app
    from flows.cli import _register

    _register()
    runner = CliRunner()
    made = runner.invoke(app, ["release", "1.0.0", "--notes", "cli release", "--fractions", "60/20/20"])
    assert made.exit_code == 0, made.output
    assert "release 1.0.0" in made.output and (filled.home / "releases" / "1.0.0" / "manifest.json").is_file()
    again = runner.invoke(app, ["release", "1.0.0"])
    assert again.exit_code == 2 and "already exists" in again.output
    rebuilt = runner.invoke(app, ["release-reproduce", "1.0.0", str(tmp_path / "copy")])
    assert rebuilt.exit_code == 0 and "identical" in rebuilt.output, rebuilt.output
    assert _files(tmp_path / "copy") == _files(filled.home / "releases" / "1.0.0")
    checked = runner.invoke(app, ["release-verify", "1.0.0"])
    assert checked.exit_code == 0 and "intact" in checked.output
    listed = runner.invoke(app, ["releases"])
    assert listed.exit_code == 0 and "1.0.0" in listed.output
