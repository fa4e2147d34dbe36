"""The Label Studio labeling interface, generated from `schemas.keypoints` (never written by hand).

What Label Studio 1.23 offers for keypoints, and how it is used here:
- one KeyPointLabels control per keypoint group (spine, body, feet, face, extra), each label in its
  group's colour (the same colours as FiftyOne and the plots), a hover hint saying what the point
  is, and a fixed hotkey: 1-9, 0 walk the spine sacrum to skull to head top; body points have a
  mnemonic letter, lower case for the person's left, shift for the right (`hotkeys()`);
- a `person` RectangleLabels for the box (hotkey b);
- a per-region `visibility` Choices right under the image: select a point, press o (occluded) or
  i (visible). A point with no choice is visible (COCO v=2), "occluded" gives v=1, a deleted point
  is not labelled (v=0). Per-region choices keep one label per keypoint (a second "occluded"
  palette would double the 37 labels and the result format);
- Label Studio has no keypoint skeleton. Point names on the canvas are only its editor setting
  "Show region labels" (Settings, per browser, off by default; no tag attribute of 1.23.2 turns it
  on or off for keypoints): with it on, 37 name tags and score badges cover the body, so the
  instructions ask to leave it off. A point's name shows when it is selected (click it: the regions
  list marks it and the region details name it) and hovering a row of the regions list highlights
  its point; the palette colour says the group (spine red, body blue, feet green, face orange).
- The image is a crop around the task's person (view.py), so the person fills the canvas.
"""

from __future__ import annotations

from html import escape

from schemas.keypoints import GROUP_COLOURS, KEYPOINTS, SPINE_CHAIN, Keypoint

IMAGE = "image"
PERSON = "person"
VISIBILITY = "visibility"
OCCLUDED = "occluded"
VISIBLE = "visible"
GROUP_ORDER = ("spine", "body", "feet", "face", "extra")
GROUP_TITLES = {
    "spine": "Spine, sacrum to skull, then head top (keys 1-9, 0)",
    "body": "Body joints (letter: person's LEFT, shift+letter: RIGHT)",
    "feet": "Feet",
    "face": "Face",
    "extra": "Experimental: clavicles, latissimus",
}
#: Hotkeys Label Studio itself binds with this config (tools, region actions): never given to a label.
RESERVED_KEYS = frozenset({"h", "k", "r", "v", "u", "shift+1", "shift+2"})
#: The image's height on the page: the whole crop in view under the header, above the submit bar.
IMAGE_MAX_HEIGHT = "calc(100vh - 260px)"
PERSON_KEY = "b"
OCCLUDED_KEY = "o"
VISIBLE_KEY = "i"
#: Mnemonic letter of each left/right pair (left: the letter, right: shift+letter) and of the nose.
_LETTERS = {
    "eye": "e", "ear": "t", "shoulder": "s", "elbow": "w", "wrist": "q", "hip": "p", "knee": "j",
    "ankle": "a", "big_toe": "g", "small_toe": "m", "heel": "f", "latissimus": "d", "clavicle": "c",
}


def control_name(group: str) -> str:
    """The KeyPointLabels control holding a group's keypoints, e.g. `kp_spine`."""
    return f"kp_{group}"


def keypoint_controls() -> dict[str, str]:
    """Keypoint name -> the name of the control that labels it."""
    return {k.name: control_name(k.group) for k in KEYPOINTS}


def _group_members(group: str) -> list[Keypoint]:
    members = [k for k in KEYPOINTS if k.group == group]
    if group == "spine":  # the order an annotator walks the spine: sacrum to skull, then head top
        rank = {idx: pos for pos, idx in enumerate(SPINE_CHAIN)}
        members.sort(key=lambda k: rank.get(k.index, len(rank)))
    return members


def hotkeys() -> dict[str, str]:
    """Keypoint name -> its hotkey (unique, none of Label Studio's own; see tests)."""
    keys: dict[str, str] = {}
    for n, k in enumerate(_group_members("spine")):
        keys[k.name] = str((n + 1) % 10)
    for k in KEYPOINTS:
        if k.name in keys:
            continue
        if k.name == "nose":
            keys[k.name] = "n"
            continue
        side, _, part = k.name.partition("_")
        letter = _LETTERS[part]
        keys[k.name] = letter if side == "left" else f"shift+{letter}"
    return keys


def _hint(k: Keypoint) -> str:
    side = ""
    if k.name.startswith("left_"):
        side = " (the person's own LEFT)"
    elif k.name.startswith("right_"):
        side = " (the person's own RIGHT)"
    return escape(f"{k.meaning or k.name}{side}", quote=True)


def label_config() -> str:
    """The XML labeling config for a SpineTrack project."""
    keys = hotkeys()
    lines = [
        "<View>",
        "  <Header value=\"Correct the person's 37 keypoints. Left/right = the PERSON's own side "
        f'(not the image side). Select a point, then {OCCLUDED_KEY} = occluded, {VISIBLE_KEY} = visible."/>',
        # the image on the left, the palette beside it: every label and its key in view while labelling
        '  <View style="display: flex; align-items: flex-start; gap: 16px;">',
        '  <View style="flex: 0 0 60%; min-width: 0;">',
        f'  <Image name="{IMAGE}" value="$image" zoom="true" zoomControl="true" rotateControl="false" '
        f'maxHeight="{IMAGE_MAX_HEIGHT}" horizontalAlignment="center"/>',
        "  </View>",
        '  <View style="flex: 1 1 40%; min-width: 0;">',
        f'  <Header value="Selected point is ({VISIBLE_KEY}) visible or ({OCCLUDED_KEY}) occluded: '
        'hidden, but you can tell where it is" size="6"/>',
        f'  <Choices name="{VISIBILITY}" toName="{IMAGE}" perRegion="true" choice="single" '
        f'showInline="true">',
        f'    <Choice value="{VISIBLE}" hotkey="{VISIBLE_KEY}" hint="seen in the image (default)"/>',
        f'    <Choice value="{OCCLUDED}" hotkey="{OCCLUDED_KEY}" '
        'hint="hidden by the body, clothing or another object, position inferred"/>',
        "  </Choices>",
        f'  <RectangleLabels name="{PERSON}" toName="{IMAGE}" strokeWidth="2" opacity="0.15">',
        f'    <Label value="{PERSON}" background="#888888" hotkey="{PERSON_KEY}" '
        'hint="the box around the one person of this task"/>',
        "  </RectangleLabels>",
    ]
    for group in GROUP_ORDER:
        members = _group_members(group)
        if not members:
            continue
        lines.append(f'  <Header value="{escape(GROUP_TITLES[group])}" size="6"/>')
        lines.append(
            f'  <KeyPointLabels name="{control_name(group)}" toName="{IMAGE}" strokeWidth="2" '
            f'opacity="0.9" smart="false" snap="pixel">'
        )
        for k in members:
            lines.append(f'    <Label value="{k.name}" background="{GROUP_COLOURS[group]}" '
                         f'hotkey="{keys[k.name]}" hint="{_hint(k)}"/>')
        lines.append("  </KeyPointLabels>")
    lines += ["  </View>", "  </View>", "</View>"]
    return "\n".join(lines) + "\n"


def instructions_html() -> str:
    """Annotator instructions: whose left is left, what all 37 points are, visibility, hotkeys."""
    keys = hotkeys()

    def table(group: str) -> str:
        rows = "".join(f"<tr><td><kbd>{escape(keys[k.name])}</kbd></td><td>{k.name}</td>"
                       f"<td>{escape(k.meaning)}</td></tr>" for k in _group_members(group))
        return f"<table><tr><th>key</th><th>keypoint</th><th>where</th></tr>{rows}</table>"

    others = sum(1 for k in KEYPOINTS if k.group != "spine")
    return (
        "<p>Each task shows one person (grey box, key <kbd>b</kbd>). The points are the model's guess: "
        "drag wrong points, delete points that cannot be located at all (<kbd>backspace</kbd>), add "
        "missing ones by pressing a point's key and clicking. Skip the task if the box does not "
        "contain one person.</p>"
        "<p><b>Left and right are the person's own</b>: for a person facing the camera, their left "
        "shoulder is on the image's right. Lower-case key = left, <kbd>shift</kbd>+key = right.</p>"
        f"<p><b>Visibility</b>: select a point, press <kbd>{OCCLUDED_KEY}</kbd> when it is hidden "
        f"(by the body, clothing, another person or object) but you can infer where it is, "
        f"<kbd>{VISIBLE_KEY}</kbd> to mark it visible again. Unmarked points count as visible.</p>"
        "<p>The image is cropped around this task's person. Point names are <b>not</b> drawn on the "
        "image, so they do not hide the body: click a point to see its name (the regions list marks "
        "it, the details name it), or hover a row of the regions list to find its point. Leave the "
        "editor setting <i>Show region labels</i> off.</p>"
        "<p>Points drawn but not movable are <b>given</b>: a person placed them already (the task's "
        "<i>given_points</i>); place and correct only the others.</p>"
        "<p><b>Spine</b> points sit on the midline of the back over the vertebral bodies, sacrum to "
        f"skull:</p>{table('spine')}"
        f"<p>The other {others} points: body joints (COCO), feet, face, and experimental shoulder "
        f"girdle and back points:</p>{table('body')}{table('feet')}{table('face')}{table('extra')}"
    )
