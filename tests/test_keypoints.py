"""The keypoint spec matches ../shared/SPINETRACK.md and is internally consistent."""

from __future__ import annotations

from schemas import keypoints as kp


def test_order_is_halpe26_then_spine() -> None:
    assert kp.NUM_KEYPOINTS == 37
    assert kp.NAMES[:5] == ("nose", "left_eye", "right_eye", "left_ear", "right_ear")
    assert kp.NAMES[17:20] == ("head", "neck", "hip")
    assert kp.NAMES[26:31] == ("spine_01", "spine_02", "spine_03", "spine_04", "spine_05")
    assert kp.NAMES[35:] == ("neck_02", "neck_03")


def test_spine_chain_sacrum_to_skull() -> None:
    assert [kp.NAMES[i] for i in kp.SPINE_CHAIN] == [
        "hip", "spine_01", "spine_02", "spine_03", "spine_04", "spine_05", "neck", "neck_02", "neck_03",
    ]
    assert kp.PARTITIONS["feet"] == (20, 21, 22, 23, 24, 25)
    assert kp.PARTITIONS["body"] == tuple(range(17))


def test_flip_permutation_is_an_involution_and_swaps_sides() -> None:
    perm = kp.flip_permutation()
    assert all(perm[perm[i]] == i for i in range(kp.NUM_KEYPOINTS))
    for i, name in enumerate(kp.NAMES):
        partner = kp.NAMES[perm[i]]
        if name.startswith("left_"):
            assert partner == "right_" + name[5:]
        elif not name.startswith("right_"):
            assert partner == name
    assert len(kp.FLIP_PAIRS) == 13  # 8 limb/face + 3 feet + latissimus + clavicle


def test_sigmas_and_skeleton() -> None:
    assert kp.SIGMAS[kp.INDEX["spine_01"]] == 0.10
    assert kp.SIGMAS[kp.INDEX["neck_03"]] == 0.06
    assert all(0 <= a < 37 and 0 <= b < 37 and a != b for a, b in kp.SKELETON)
    linked = {i for link in kp.SKELETON for i in link}
    assert linked == set(range(37)), "every keypoint is drawn"
    cat = kp.coco_category()
    assert cat["keypoints"] == list(kp.NAMES)
    assert min(min(link) for link in cat["skeleton"]) == 1  # type: ignore[attr-defined]
    spine = kp.coco_category(kp.PARTITIONS["spine"])  # a partition scored on its own
    assert spine["keypoints"] == [kp.NAMES[i] for i in kp.PARTITIONS["spine"]]
    links = spine["skeleton"]
    assert links and all(1 <= a <= len(kp.PARTITIONS["spine"]) for link in links for a in link)  # type: ignore[attr-defined]


def test_keypoint_array_converts_once_at_the_edge() -> None:
    import numpy as np
    import pytest

    from schemas.keypoint_array import KeypointArray

    flat = [float(v) for i in range(kp.NUM_KEYPOINTS) for v in (i + 0.25, 2 * i + 0.5, i % 3)]
    arr = KeypointArray.from_flat(flat)
    assert arr.xy.shape == (37, 2) and arr.v.shape == (37,)
    assert arr.point("neck_03") == (36.25, 72.5, 0.0)
    assert arr.num_labelled == sum(1 for i in range(37) if i % 3)
    assert arr.visible.sum() == sum(1 for i in range(37) if i % 3 == 2)
    back = arr.to_flat()
    assert back == flat and all(type(v) is int for v in back[2::3])  # flags stay ints for pycocotools
    assert KeypointArray.from_array(arr.xy, arr.v) == arr
    assert KeypointArray.from_array(arr.data) == arr
    assert KeypointArray.from_array(np.zeros((37, 2))).num_labelled == 37  # positions only: visible
    assert KeypointArray.from_flat(flat).to_flat(decimals=0)[:3] == [0.0, 0.0, 0]
    arr.xy[0] = [9.0, 9.0]  # accessors are views on the one array
    assert arr.point(0)[:2] == (9.0, 9.0)
    with pytest.raises(ValueError, match="111 numbers"):
        KeypointArray.from_flat([0.0] * 51)
    with pytest.raises(ValueError, match="37 keypoints"):
        KeypointArray.from_array(np.zeros((17, 2)))
