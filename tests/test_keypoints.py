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
