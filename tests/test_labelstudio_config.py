"""The labeling config as an annotator meets it: every point labelled, keyed and explained.

(tests/test_labelstudio_roundtrip.py checks that a real server accepts the config and that results
round-trip pixel-exact; scripts/screenshot_labelstudio.py shows it in a real browser.)
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from annotation.labelstudio.config import (
    OCCLUDED,
    OCCLUDED_KEY,
    PERSON_KEY,
    RESERVED_KEYS,
    VISIBILITY,
    VISIBLE_KEY,
    hotkeys,
    instructions_html,
    keypoint_controls,
    label_config,
)
from schemas.keypoints import GROUP_COLOURS, KEYPOINTS, NAMES, SPINE_CHAIN


def _labels() -> dict[str, ET.Element]:
    root = ET.fromstring(label_config())
    return {lab.get("value", ""): lab for control in root.iter("KeyPointLabels") for lab in control}


def test_every_keypoint_is_one_label_in_its_group_colour_with_a_hint() -> None:
    labels = _labels()
    assert set(labels) == set(NAMES)
    controls = keypoint_controls()
    root = ET.fromstring(label_config())
    for control in root.iter("KeyPointLabels"):
        for lab in control:
            assert controls[lab.get("value", "")] == control.get("name")
    for k in KEYPOINTS:
        assert labels[k.name].get("background") == GROUP_COLOURS[k.group]
        assert k.meaning in (labels[k.name].get("hint") or "")
    assert "person's own LEFT" in (labels["left_knee"].get("hint") or "")


def test_hotkeys_are_unique_and_leave_label_studios_own_keys_alone() -> None:
    keys = hotkeys()
    everything = [*keys.values(), PERSON_KEY, OCCLUDED_KEY, VISIBLE_KEY]
    assert len(everything) == len(set(everything)) == len(NAMES) + 3
    assert not set(everything) & RESERVED_KEYS
    assert [keys[NAMES[i]] for i in SPINE_CHAIN] == ["1", "2", "3", "4", "5", "6", "7", "8", "9"]
    assert keys["left_shoulder"] == "s" and keys["right_shoulder"] == "shift+s"
    labels = _labels()
    assert all(labels[name].get("hotkey") == key for name, key in keys.items())


def test_occluded_is_a_per_point_choice_with_a_hotkey_shown_before_the_palette() -> None:
    root = ET.fromstring(label_config())
    (choices,) = [c for c in root.iter("Choices") if c.get("name") == VISIBILITY]
    assert choices.get("perRegion") == "true"
    hotkey = {c.get("value"): c.get("hotkey") for c in choices}
    assert hotkey[OCCLUDED] == OCCLUDED_KEY
    order = [el.tag for el in root.iter() if el.tag in ("Choices", "KeyPointLabels")]
    assert order[0] == "Choices"  # above the palettes, not below the fold


def test_instructions_say_whose_left_and_list_all_37_points() -> None:
    text = instructions_html()
    assert "person's own" in text and "left shoulder is on the image's right" in text
    assert all(f"<td>{name}</td>" in text for name in NAMES)
    assert "27 points" in text and "Show region labels" in text
