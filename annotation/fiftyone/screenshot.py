"""A screenshot of the review App (docs/img/fiftyone-review.png) taken with headless Chromium.

Builds a throw-away store with one drawn standing figure and its 37-point label, loads it the way
`spinetrack review` does (spine over body in their own colours), serves the App on loopback and
lets Debian's Chromium render the sample's page. Run: `python -m annotation.fiftyone.screenshot
[OUT.png]`; nothing outside a temporary folder is touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw

from schemas.keypoints import INDEX, NUM_KEYPOINTS, SKELETON

CHROMIUM = "/usr/bin/chromium"
W, H = 640, 800
#: A standing person facing the camera (the person's left is the image's right), in pixels.
POSE = {
    "head": (320, 80), "nose": (320, 140), "left_eye": (335, 128), "right_eye": (305, 128),
    "left_ear": (350, 135), "right_ear": (290, 135), "neck_03": (320, 172), "neck_02": (320, 188),
    "neck": (320, 204), "left_clavicle": (358, 206), "right_clavicle": (282, 206),
    "left_shoulder": (392, 216), "right_shoulder": (248, 216), "spine_05": (320, 240),
    "spine_04": (320, 285), "spine_03": (320, 330), "spine_02": (320, 370), "spine_01": (320, 405),
    "hip": (320, 435), "left_latissimus": (368, 300), "right_latissimus": (272, 300),
    "left_elbow": (412, 330), "right_elbow": (228, 330), "left_wrist": (424, 432),
    "right_wrist": (216, 432), "left_hip": (356, 442), "right_hip": (284, 442),
    "left_knee": (362, 582), "right_knee": (278, 582), "left_ankle": (364, 718),
    "right_ankle": (276, 718), "left_heel": (362, 736), "right_heel": (278, 736),
    "left_big_toe": (382, 760), "right_big_toe": (258, 760), "left_small_toe": (398, 750),
    "right_small_toe": (242, 750),
}


def _figure(path: Path) -> list[float]:
    """Draw the figure (limbs as a grey silhouette) and return its flat COCO keypoints."""
    image = Image.new("RGB", (W, H), (232, 228, 220))
    draw = ImageDraw.Draw(image)
    names = {i: n for n, i in INDEX.items()}
    for a, b in SKELETON:
        draw.line([POSE[names[a]], POSE[names[b]]], fill=(150, 140, 130), width=22)
    draw.ellipse([280, 80, 360, 180], fill=(150, 140, 130))
    image.save(path)
    flat: list[float] = []
    for i in range(NUM_KEYPOINTS):
        x, y = POSE[names[i]]
        flat += [float(x), float(y), 2.0]
    return flat


def _wait_for(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def take(out: Path, port: int = 5161) -> Path:
    """Write the screenshot to `out`; returns it."""
    work = Path(tempfile.mkdtemp(prefix="spinetrack-shot-"))
    try:
        os.environ["FIFTYONE_DATABASE_DIR"] = str(work / "db")
        from annotation.fiftyone.samples import load_into_fiftyone
        from annotation.fiftyone.server import launch
        from pipeline.store import Store

        with Store.open(home=work) as store:
            image_path = work / "figure.png"
            kps = _figure(image_path)
            image_id = store.add_image(image_path, source="synthetic", subset="docs", group_key="docs",
                                       width=W, height=H)
            store.add_revision(store.instance_id(image_id, "actor-0"), kps, [200, 70, 240, 700],
                               source="synthetic")
            dataset = load_into_fiftyone(store, name="spinetrack-docs", with_predictions=False)
            session = launch(dataset, port=port)
            try:
                base = f"http://127.0.0.1:{port}"
                _wait_for(base + "/")
                sample_id = dataset.first().id
                profile = tempfile.mkdtemp(prefix="chromium-")
                subprocess.run(
                    [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={out}",
                     "--window-size=1600,1000", "--virtual-time-budget=20000",
                     f"{base}/datasets/{dataset.name}?id={sample_id}"],
                    check=True, timeout=300, capture_output=True,
                )
                shutil.rmtree(profile, ignore_errors=True)
            finally:
                session.close()
                dataset.delete()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img/fiftyone-review.png").resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    print(take(target))
