"""Reference outputs of BlazePose's TFLite landmark network, for tests/test_blazepose_port.py.

The fixtures under tests/fixtures/blazepose/ are made in two steps, by two interpreters:

1. The input crops, with the app's venv (frames of the project's own reference renderer, cropped
   around the rendered person, and one deterministic pattern), as 256x256 PNGs:

       .venv/bin/python scripts/make_blazepose_reference.py crops

2. The TFLite interpreter's raw outputs on those crops (and on two real-photo crops read from
   ../shared/data/real_people when it is there: only the image's relative path, the crop box and the
   outputs are stored, never the image), in a throwaway venv OUTSIDE the repository: ai-edge-litert
   pulls protobuf 7, which breaks mediapipe 0.10.14 in the app's venv:

       python3 -m venv /tmp/litert-venv
       /tmp/litert-venv/bin/pip install ai-edge-litert==2.3.0 numpy pillow
       /tmp/litert-venv/bin/python scripts/make_blazepose_reference.py outputs

   The model file is the one in the app venv's mediapipe wheel (`--model` to give another path).

The detector (pose_detection.tflite, tests/test_blazepose_detector.py) has the same two steps, its
fixtures under tests/fixtures/blazepose/detector/ (whole frames and one photo, letterboxed to 224):

       .venv/bin/python scripts/make_blazepose_reference.py detector-crops
       /tmp/litert-venv/bin/python scripts/make_blazepose_reference.py detector-outputs

Step 2 writes `reference.npz` (landmarks [K,195], pose flag [K], world [K,117] in float32, heatmaps
[K,64,64,13] in float16 (every third of the 39 channels), segmentation logits at every 8th pixel
[K,32,32]) and `cases.json`
(what each case is, the model file's sha256, the interpreter's version). Step 2 imports nothing
from the project (its venv has none of the app's dependencies): the crop rule for real photos is
written out here and in the test alike (`real_crop`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "blazepose"
REAL_PEOPLE = REPO.parent / "shared" / "data" / "real_people"
SITE_PACKAGES = REPO / ".venv" / "lib" / "python3.11" / "site-packages"
MODEL = SITE_PACKAGES / "mediapipe" / "modules" / "pose_landmark" / "pose_landmark_full.tflite"
DETECTOR_FIXTURES = FIXTURES / "detector"
DETECTOR_MODEL = SITE_PACKAGES / "mediapipe" / "modules" / "pose_detection" / "pose_detection.tflite"
SIZE = 256
DETECTOR_SIZE = 224
SEG_STEP = 8
#: Heatmap channels kept (every third of the 39, at the full 64x64): all 39 in float16 would be 2 MB.
HEATMAP_CHANNELS = tuple(range(0, 39, 3))

#: Rendered crops: (motion, seed, frame). Frames are rendered at 640x512 and cropped around the person
#: like real photos (real_crop of square_box of its ground-truth box).
RENDERS = (("mixed", 3, 1), ("reach", 7, 0), ("squat", 11, 2))
#: Real-photo cases: image path under ../shared/data/real_people and its COCO person box (x, y, w, h);
#: the crop is the box's centre, side 1.25 x the longer side (see real_crop).
REAL = (("coco/000000000785.jpg", (281.0, 45.0, 219.0, 347.0)),
        ("coco/000000196141.jpg", (248.0, 74.0, 170.0, 301.0)))


#: Detector cases: whole frames (640x512, letterboxed to 224x224) and one real photo, letterboxed.
DETECTOR_RENDERS = (("walk", 5, 0), ("reach", 7, 0))
DETECTOR_REAL = ("coco/000000000785.jpg",)


def square_box(box: tuple[float, float, float, float], scale: float = 1.25) -> tuple[float, float, float]:
    """(x0, y0, side) of the square around a box's centre, side = scale x the longer side."""
    x, y, w, h = box
    side = scale * max(w, h)
    return x + w / 2 - side / 2, y + h / 2 - side / 2, side


def real_crop(image: np.ndarray, crop: tuple[float, float, float], size: int = SIZE) -> np.ndarray:
    """Nearest-neighbour square crop (x0, y0, side) of an HxWx3 uint8 image to size x size; black outside."""
    x0, y0, side = crop
    centres = (np.arange(size) + 0.5) * side / size
    cols = np.floor(x0 + centres).astype(np.int64)
    rows = np.floor(y0 + centres).astype(np.int64)
    out = np.zeros((size, size, 3), dtype=np.uint8)
    valid_r = (rows >= 0) & (rows < image.shape[0])
    valid_c = (cols >= 0) & (cols < image.shape[1])
    out[np.ix_(valid_r, valid_c)] = image[np.ix_(rows[valid_r], cols[valid_c])][..., :3]
    return out


def pattern(size: int = SIZE) -> np.ndarray:
    """A deterministic size x size RGB test pattern: gradients, rings and a checkerboard band."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    r = np.hypot(xx - size / 2, yy - size * 100 / 256)
    red = 0.5 + 0.5 * np.sin(r / 9.0)
    green = xx / (size - 1)
    blue = 0.5 + 0.5 * np.cos((xx + 2 * yy) / 23.0)
    checker = ((xx // 16 + yy // 16) % 2 == 0) & (yy > size * 170 / 256)
    rgb = np.stack([red, green, blue], axis=-1)
    rgb[checker] = 1.0 - rgb[checker]
    return np.round(rgb * 255).astype(np.uint8)


def letterbox_crop(height: int, width: int) -> tuple[float, float, float]:
    """The real_crop box that letterboxes a whole image into a square (centred, black bands)."""
    side = float(max(height, width))
    return (width - side) / 2, (height - side) / 2, side


def make_crops() -> None:
    """Step 1: render with the project's reference renderer and write the 256x256 input PNGs."""
    import tempfile

    sys.path.insert(0, str(REPO))
    from synthetic.sample_set import GROUND_TRUTH, SequenceSpec, render_set

    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for motion, seed, frame in RENDERS:
            (folder,) = render_set(tmp, [SequenceSpec(motion, seed, frame + 1, width=640, height=512)])
            gt = json.loads((folder / GROUND_TRUTH).read_text())
            image_info = next(img for img in gt["images"] if img.get("frame", img["id"]) == frame)
            ann = next(a for a in gt["annotations"] if a["image_id"] == image_info["id"])
            image = np.asarray(Image.open(folder / image_info["file_name"]).convert("RGB"))
            crop = Image.fromarray(real_crop(image, square_box(tuple(ann["bbox"]))))
            crop.save(FIXTURES / f"render_{motion}_seed{seed}_f{frame}.png")
    Image.fromarray(pattern()).save(FIXTURES / "pattern.png")
    print(f"wrote {len(RENDERS) + 1} crops to {FIXTURES}")


def make_detector_crops() -> None:
    """Detector step 1: whole rendered frames letterboxed to 224x224 (and their true hip centres, for
    a plausibility check of the decoding), and the pattern at 224."""
    import tempfile

    sys.path.insert(0, str(REPO))
    from synthetic.sample_set import GROUND_TRUTH, SequenceSpec, render_set

    DETECTOR_FIXTURES.mkdir(parents=True, exist_ok=True)
    hips: dict[str, list[float]] = {}  # ground-truth hip centre of each frame, in 224-px input pixels
    with tempfile.TemporaryDirectory() as tmp:
        for motion, seed, frame in DETECTOR_RENDERS:
            (folder,) = render_set(tmp, [SequenceSpec(motion, seed, frame + 1, width=640, height=512)])
            gt = json.loads((folder / GROUND_TRUTH).read_text())
            image_info = next(img for img in gt["images"] if img.get("frame", img["id"]) == frame)
            image = np.asarray(Image.open(folder / image_info["file_name"]).convert("RGB"))
            box = letterbox_crop(*image.shape[:2])
            crop = real_crop(image, box, DETECTOR_SIZE)
            name = f"render_{motion}_seed{seed}_f{frame}.png"
            Image.fromarray(crop).save(DETECTOR_FIXTURES / name)
            ann = next(a for a in gt["annotations"] if a["image_id"] == image_info["id"])
            kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
            hip = (kps[11, :2] + kps[12, :2]) / 2  # midpoint of the left and right hip joints
            hips[name] = [round(float(v), 3) for v in (hip - box[:2]) * DETECTOR_SIZE / box[2]]
    Image.fromarray(pattern(DETECTOR_SIZE)).save(DETECTOR_FIXTURES / "pattern.png")
    (DETECTOR_FIXTURES / "hips.json").write_text(json.dumps(hips, indent=1) + "\n")
    print(f"wrote {len(DETECTOR_RENDERS) + 1} detector inputs to {DETECTOR_FIXTURES}")


def make_detector_outputs(model: Path) -> None:
    """Detector step 2: the TFLite detector's raw outputs (input RGB / 127.5 - 1)."""
    from ai_edge_litert import interpreter as litert

    cases: list[dict[str, object]] = []
    inputs: list[np.ndarray] = []
    for png in sorted(DETECTOR_FIXTURES.glob("*.png")):
        cases.append({"name": png.stem, "kind": "png", "file": png.name})
        inputs.append(np.asarray(Image.open(png).convert("RGB")))
    if REAL_PEOPLE.is_dir():
        for rel in DETECTOR_REAL:
            image = np.asarray(Image.open(REAL_PEOPLE / rel).convert("RGB"))
            crop = letterbox_crop(*image.shape[:2])
            pixels = real_crop(image, crop, DETECTOR_SIZE)
            cases.append({"name": Path(rel).stem, "kind": "real", "path": rel, "crop": list(crop),
                          "crop_sha256": hashlib.sha256(pixels.tobytes()).hexdigest()})
            inputs.append(pixels)
    interp = litert.Interpreter(model_path=str(model), num_threads=1)
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    by_width = {int(d["shape"][-1]): d["index"] for d in interp.get_output_details()}
    regressors_idx, scores_idx = by_width[12], by_width[1]
    regressors, scores = [], []
    for pixels in inputs:
        interp.set_tensor(inp["index"], (pixels.astype(np.float32) / 127.5 - 1.0)[None])
        interp.invoke()
        regressors.append(interp.get_tensor(regressors_idx)[0].copy())
        scores.append(interp.get_tensor(scores_idx)[0, :, 0].copy())
    np.savez_compressed(DETECTOR_FIXTURES / "reference.npz",
                        regressors=np.stack(regressors).astype(np.float32),
                        scores=np.stack(scores).astype(np.float32))
    meta = {
        "model": "mediapipe==0.10.14 mediapipe/modules/pose_detection/pose_detection.tflite",
        "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "interpreter": "ai-edge-litert 2.3.0",
        "input": "RGB / 127.5 - 1 as float32 [1,224,224,3]",
        "cases": cases,
    }
    (DETECTOR_FIXTURES / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote detector outputs of {len(cases)} cases to {DETECTOR_FIXTURES}")


def make_outputs(model: Path) -> None:
    """Step 2: run the TFLite interpreter on every crop and store its raw outputs."""
    from ai_edge_litert import interpreter as litert

    cases: list[dict[str, object]] = []
    inputs: list[np.ndarray] = []
    for png in sorted(FIXTURES.glob("*.png")):
        cases.append({"name": png.stem, "kind": "png", "file": png.name})
        inputs.append(np.asarray(Image.open(png).convert("RGB")))
    if REAL_PEOPLE.is_dir():
        for rel, box in REAL:
            crop = square_box(box)
            pixels = real_crop(np.asarray(Image.open(REAL_PEOPLE / rel).convert("RGB")), crop)
            cases.append({"name": Path(rel).stem, "kind": "real", "path": rel, "crop": list(crop),
                          "crop_sha256": hashlib.sha256(pixels.tobytes()).hexdigest()})
            inputs.append(pixels)
    else:
        print(f"{REAL_PEOPLE} not found: no real-photo cases")

    interp = litert.Interpreter(model_path=str(model), num_threads=1)
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    by_name = {d["name"]: d["index"] for d in interp.get_output_details()}
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("landmarks", "pose_flag", "segmentation",
                                                         "heatmaps", "world")}
    names = {"landmarks": "Identity", "pose_flag": "Identity_1", "segmentation": "Identity_2",
             "heatmaps": "Identity_3", "world": "Identity_4"}
    for pixels in inputs:
        interp.set_tensor(inp["index"], (pixels.astype(np.float32) / 255.0)[None])
        interp.invoke()
        for key, name in names.items():
            out[key].append(interp.get_tensor(by_name[name])[0].copy())
    half = SEG_STEP // 2
    np.savez_compressed(
        FIXTURES / "reference.npz",
        landmarks=np.stack(out["landmarks"]).astype(np.float32),
        pose_flag=np.stack(out["pose_flag"])[:, 0].astype(np.float32),
        world=np.stack(out["world"]).astype(np.float32),
        heatmaps=np.stack(out["heatmaps"])[..., list(HEATMAP_CHANNELS)].astype(np.float16),
        segmentation=np.stack(out["segmentation"])[:, half::SEG_STEP, half::SEG_STEP, 0].astype(np.float32),
    )
    import ai_edge_litert

    meta = {
        "model": "mediapipe==0.10.14 mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "interpreter": f"ai-edge-litert {getattr(ai_edge_litert, '__version__', '2.3.0')}",
        "input": "RGB / 255 as float32 [1,256,256,3]",
        "segmentation_step": SEG_STEP,
        "heatmap_channels": list(HEATMAP_CHANNELS),
        "cases": cases,
    }
    (FIXTURES / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote outputs of {len(cases)} cases to {FIXTURES}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("crops", "outputs", "detector-crops", "detector-outputs"))
    parser.add_argument("--model", type=Path, help="the .tflite file (default: the app venv's mediapipe)")
    args = parser.parse_args()
    if args.step == "crops":
        make_crops()
    elif args.step == "outputs":
        make_outputs(args.model or MODEL)
    elif args.step == "detector-crops":
        make_detector_crops()
    else:
        make_detector_outputs(args.model or DETECTOR_MODEL)


if __name__ == "__main__":
    main()
