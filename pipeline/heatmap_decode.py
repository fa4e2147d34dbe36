"""mmpose's heatmap decoding (MSRAHeatmap with `unbiased=True`: maximum + one DARK step), batched.

mmpose blurs every whole heatmap and refines keypoint by keypoint in Python: 20 ms per person for
37 rows with the flip test's three decodes, as much as the network itself. The DARK step needs the
blurred map only in a 5x5 window around the maximum, and the derivatives of its logarithm do not
change when mmpose rescales the blurred map, so the blur is taken on 15x15 windows only and the
step for all keypoints at once.

One difference, on purpose: the step is clipped to two heatmap cells per axis (BlazePose's own
rows, broader than the codec's Gaussian, take steps of more than one cell; 5 of 274 points of the
COCO sample people take more than two). On a flat map (a new row before training, peak 25/4096)
mmpose's step is ill-conditioned: it lands tens of pixels away, even outside the crop, and float32
rounding decides where; ours stops at two cells. Elsewhere equal to mmpose's decode within float
rounding (tests/test_blaze37.py). The `onnx:` annotator decodes with it too.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

#: mmpose's MSRAHeatmap blur kernel (its default for sigma 2).
BLUR_KERNEL = 11
#: Largest DARK step taken, in heatmap cells (see the module docstring).
MAX_STEP = 2.0


def _band(kernel: int) -> NDArray[np.float64]:
    """(5, kernel + 4): row i applies the 1-D Gaussian centred on window cell i + radius."""
    g = cv2.getGaussianKernel(kernel, 0).ravel()
    band = np.zeros((5, kernel + 4))
    for i in range(5):
        band[i, i:i + kernel] = g
    return band


def decode_heatmaps(heatmaps: NDArray[np.floating], scale: tuple[float, float], kernel: int = BLUR_KERNEL
                    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(N, K, H, W) heatmaps -> keypoints (N, K, 2) in input pixels (cells x `scale`) and scores
    (N, K), as mmpose's MSRAHeatmap(unbiased=True).decode gives them one sample at a time."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    index = flat.argmax(axis=-1)
    scores = flat.max(axis=-1).astype(np.float32)
    x, y = index % w, index // w
    locs = np.stack([x, y], axis=-1).astype(np.float32)
    locs[scores <= 0] = -1

    reach = (kernel - 1) // 2 + 2
    padded = np.pad(heatmaps.astype(np.float64), ((0, 0), (0, 0), (reach, reach), (reach, reach)))
    span = np.arange(2 * reach + 1)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    windows = padded[ni[..., None, None], ki[..., None, None],
                     (y[..., None] + span)[..., :, None], (x[..., None] + span)[..., None, :]]
    band = _band(kernel)
    blurred = band @ windows @ band.T  # (N, K, 5, 5) around the maximum
    peak = blurred.reshape(n, k, -1).max(axis=-1)
    factor = np.where(peak > 0, scores / np.where(peak > 0, peak, 1.0), 1.0)  # mmpose's rescale
    logs = np.log(np.maximum(blurred * factor[..., None, None], 1e-10))

    dx = 0.5 * (logs[..., 2, 3] - logs[..., 2, 1])
    dy = 0.5 * (logs[..., 3, 2] - logs[..., 1, 2])
    dxx = 0.25 * (logs[..., 2, 4] - 2 * logs[..., 2, 2] + logs[..., 2, 0])
    dxy = 0.25 * (logs[..., 3, 3] - logs[..., 1, 3] - logs[..., 3, 1] + logs[..., 1, 1])
    dyy = 0.25 * (logs[..., 4, 2] - 2 * logs[..., 2, 2] + logs[..., 0, 2])
    det = dxx * dyy - dxy ** 2
    safe = np.where(det != 0, det, 1.0)
    offset = np.stack([-(dyy * dx - dxy * dy) / safe, -(dxx * dy - dxy * dx) / safe], axis=-1)
    inside = (scores > 0) & (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2) & (det != 0)
    offset = np.clip(offset, -MAX_STEP, MAX_STEP)  # clipped, not dropped: no jump at the bound
    locs = locs + np.where(inside[..., None], offset, 0.0).astype(np.float32)
    return (locs * np.asarray(scale, dtype=np.float32)).astype(np.float32), scores
