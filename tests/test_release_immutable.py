"""A published release cannot change: rewriting any source in place leaves it byte-identical.

Issue 20: release images used to be hard links to the render frames, so re-rendering a frame in
place rewrote the released image. Now the store keeps its own read-only copy of every image
(pipeline/store/objects.py, made when ingest or import registers it) and releases link only that.
The test publishes a release of rendered frames and imported "real" images, rewrites every render
frame, every real image and every Label Studio media file in place (same inode, new bytes), and
checks the release, `release-verify` and `release-reproduce`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from annotation.labelstudio.server import media_root, stage_media
from pipeline.intake.real_import import import_coco
from pipeline.release.build import create_release, reproduce_release, verify_release
from pipeline.splits import assign_splits
from pipeline.store import Store
from pipeline.store.models import Image
from pipeline.store.objects import object_path
from schemas.errors import InputError
from schemas.keypoints import NUM_KEYPOINTS
from synthetic.ingest import ingest_sequence
from synthetic.sample_set import SequenceSpec, render_set

SIZE = {"width": 96, "height": 80}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rewrite_in_place(path: Path) -> None:
    """New bytes in the same inode, as a re-render or a re-export into the same folder does."""
    before = path.stat().st_ino
    with open(path, "r+b") as fh:
        data = fh.read()
        fh.seek(0)
        fh.write(bytes(b ^ 0xFF for b in data))
    assert path.stat().st_ino == before


@pytest.fixture()
def published(store: Store, tmp_path: Path) -> tuple[Store, Path, list[Path], list[Path], list[Path]]:
    renders = render_set(tmp_path / "renders", [SequenceSpec("bend", 12, 4, **SIZE)])
    for folder in renders:
        ingest_sequence(store, folder)
    real = render_set(tmp_path / "real", [SequenceSpec("walk", 13, 3, **SIZE)])[0]
    import_coco(store, real / "ground_truth.json", image_dir=real, subset="people", group="people/walk")
    with store.session() as s:
        people = s.scalars(select(Image).where(Image.source == "real")).all()
    for img in people:  # a person's label for every real image, so the release holds them too
        inst = store.instance_id(img.id, "coco-ann:x")
        store.add_revision(inst, [5.0, 5.0, 2.0] * NUM_KEYPOINTS, [1, 1, 20, 30], source="human",
                           annotator="a", external_id=f"ls:{img.id}:1")
    groups = {"bend-seed12": "train", "people/walk": "val"}
    assign_splits(store, groups, pinned=groups)
    media = [stage_media(img.path, img.sha256, media_root(store.home)) for img in people]
    frames = sorted((renders[0] / "rgb").iterdir())
    return store, create_release(store, "0.1.0").path, frames, sorted(real.glob("rgb/*.png")), media


def test_rewriting_every_source_in_place_leaves_the_release_unchanged(
    published: tuple[Store, Path, list[Path], list[Path], list[Path]], tmp_path: Path,
) -> None:
    store, release, frames, real_images, media = published
    released = _files(release)
    images = sorted((release / "images").iterdir())
    assert len(images) == len(frames) + len(real_images)
    sources = {p.stat().st_ino for p in [*frames, *real_images, *media]}
    assert not sources & {p.stat().st_ino for p in images}, "a release shares an inode with a source"
    for path in release.rglob("*"):
        if path.is_file():
            assert not stat.S_IMODE(path.stat().st_mode) & 0o222, f"{path} is writable"

    for path in [*frames, *real_images, *media]:
        _rewrite_in_place(path)

    assert _files(release) == released
    assert verify_release(release) == []
    rebuilt = reproduce_release(store, "0.1.0", tmp_path / "rebuilt")
    assert _files(rebuilt) == released
    # a later release still has the bytes that were labelled, not the rewritten ones
    second = create_release(store, "0.2.0").path
    assert {n: b for n, b in _files(second).items() if n.startswith("images/")} == {
        n: b for n, b in released.items() if n.startswith("images/")}


def test_a_changed_source_is_a_new_image_version(
    published: tuple[Store, Path, list[Path], list[Path], list[Path]],
) -> None:
    store, _release, _frames, real_images, _media = published
    real_folder = real_images[0].parents[1]
    with store.session() as s:
        before = {img.id: (img.sha256, img.path) for img in s.scalars(select(Image))}
    with PILImage.open(real_images[0]) as old:  # edited in place: another valid image, same size
        edited = PILImage.new(old.mode, old.size, 0)
    before_inode = real_images[0].stat().st_ino
    edited.save(real_images[0])
    assert real_images[0].stat().st_ino == before_inode
    import_coco(store, real_folder / "ground_truth.json", image_dir=real_folder, subset="people",
                group="people/walk")
    with store.session() as s:
        after = {img.id: img for img in s.scalars(select(Image))}
        new = [img for iid, img in after.items() if iid not in before]
        assert len(new) == 1 and new[0].meta["source_path"] == str(real_images[0])
        assert new[0].sha256 == hashlib.sha256(real_images[0].read_bytes()).hexdigest()
        for iid, (digest, path) in before.items():  # the old versions keep their bytes
            assert (after[iid].sha256, after[iid].path) == (digest, path)
            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest


def test_an_image_that_changed_after_it_was_hashed_is_refused(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG not really")
    read_then = hashlib.sha256(b"what ingest read").hexdigest()
    with pytest.raises(InputError) as err:
        store.add_image(path, source="real", subset="s", group_key="g", width=2, height=2, sha256=read_then)
    assert err.value.field == "sha256" and err.value.path == str(path)
    with store.session() as s:
        assert s.scalars(select(Image)).first() is None
    assert not object_path(store.home, read_then, ".png").exists()


def test_objects_are_read_only_copies(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(b"some image bytes")
    image_id = store.add_image(path, source="real", subset="s", group_key="g", width=2, height=2)
    with store.session() as s:
        img = s.get(Image, image_id)
        assert img is not None
    copy = Path(img.path)
    assert copy == object_path(store.home, img.sha256, ".png") and copy.read_bytes() == path.read_bytes()
    assert copy.stat().st_ino != path.stat().st_ino and copy.stat().st_nlink == 1
    assert not stat.S_IMODE(copy.stat().st_mode) & 0o222
    assert os.path.samefile(img.meta["source_path"], path)
