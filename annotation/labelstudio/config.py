"""The Label Studio labeling interface, generated from `schemas.keypoints` (never written by hand).

One KeyPointLabels control per keypoint group (face, body, feet, spine, extra), so the palette is grouped
and coloured like every other view of the data; a `person` RectangleLabels for the box; and a per-region
`visibility` Choices: select a point, tick "occluded" when it is hidden but its position can be inferred.
A point with no choice is visible (COCO v=2), "occluded" gives v=1, a deleted point is not labelled (v=0).
Per-region choices keep one label per keypoint (a second "occluded" palette would double the 37 labels).
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
    "spine": "Spine (sacrum to skull) and head top",
    "body": "Body joints",
    "feet": "Feet",
    "face": "Face",
    "extra": "Experimental (clavicles, latissimus)",
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


def label_config() -> str:
    """The XML labeling config for a SpineTrack project."""
    lines = [
        "<View>",
        f"  <Header value=\"Correct the person's 37 keypoints; select a point and tick "
        f'{OCCLUDED} if it is hidden"/>',
        f'  <Image name="{IMAGE}" value="$image" zoom="true" zoomControl="true" rotateControl="false"/>',
        f'  <RectangleLabels name="{PERSON}" toName="{IMAGE}" strokeWidth="2">',
        f'    <Label value="{PERSON}" background="#888888"/>',
        "  </RectangleLabels>",
    ]
    for group in GROUP_ORDER:
        members = _group_members(group)
        if not members:
            continue
        lines.append(f'  <Header value="{escape(GROUP_TITLES[group])}" size="6"/>')
        lines.append(
            f'  <KeyPointLabels name="{control_name(group)}" toName="{IMAGE}" strokeWidth="2" '
            f'smart="false" snap="pixel">'
        )
        for k in members:
            hint = escape(k.meaning or k.name, quote=True)
            lines.append(f'    <Label value="{k.name}" background="{GROUP_COLOURS[group]}" hint="{hint}"/>')
        lines.append("  </KeyPointLabels>")
    lines += [
        f'  <Choices name="{VISIBILITY}" toName="{IMAGE}" perRegion="true" choice="single" '
        f'showInline="true">',
        f'    <Choice value="{VISIBLE}"/>',
        f'    <Choice value="{OCCLUDED}"/>',
        "  </Choices>",
        "</View>",
    ]
    return "\n".join(lines) + "\n"


def instructions_html() -> str:
    """Annotator instructions: what each spine point means anatomically, and the visibility rule."""
    rows = "".join(f"<tr><td>{k.name}</td><td>{escape(k.meaning)}</td></tr>" for k in _group_members("spine"))
    return (
        "<p>Each task shows one person (grey box). The points are the model's guess: drag wrong points, "
        "delete points that cannot be located at all, add missing ones from the palette. Select a point "
        f"and tick <b>{OCCLUDED}</b> when it is hidden but you can infer where it is. "
        "Skip the task if the box does not contain one person.</p>"
        "<p>Spine points sit on the midline of the back over the vertebral bodies, sacrum to skull:</p>"
        f"<table><tr><th>keypoint</th><th>anatomical landmark</th></tr>{rows}</table>"
    )
