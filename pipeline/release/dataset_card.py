"""The dataset card (README.md of a release), generated from its manifest and nothing else.

Because the card is a pure function of the manifest, a reproduced release has the same card, and a
card can always be checked against the manifest it claims to describe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pipeline.release.kit import card_lines, has_kit
from pipeline.splits import SPLITS
from schemas.keypoints import KEYPOINTS, SPINE_CHAIN
from schemas.manifest import ReleaseManifest

#: How many changed instance ids the card lists before it points at the manifest.
CHANGELOG_PREVIEW = 20


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _in_split_order(names: Iterable[str]) -> list[str]:
    """train, val, test first, whatever order a JSON round trip left the keys in."""
    names = list(names)
    return [s for s in SPLITS if s in names] + sorted(n for n in names if n not in SPLITS)


def _by_split_table(title: str, per_split: Mapping[str, Mapping[str, int]]) -> list[str]:
    splits = _in_split_order(per_split)
    keys = sorted({k for counts in per_split.values() for k in counts})
    if not keys:
        return []
    rows = [[k, *(per_split[s].get(k, 0) for s in splits), sum(per_split[s].get(k, 0) for s in splits)]
            for k in keys]
    return ["", f"### {title}", "", *_table([title.lower(), *splits, "total"], rows)]


def _ids(ids: Sequence[int]) -> str:
    if not ids:
        return "none"
    shown = ", ".join(str(i) for i in ids[:CHANGELOG_PREVIEW])
    more = len(ids) - CHANGELOG_PREVIEW
    return shown + (f", … ({more} more in manifest.json)" if more > 0 else "")


def _point_sources(per_split: Mapping[str, Mapping[str, int]] | None) -> list[str]:
    """Who placed the labelled points: an imported COCO person's body is `human` and its completed
    spine `pseudo-accepted` (the annotations' `spinetrack.point_sources` say it point by point).
    Releases made before points had sources have no such table."""
    if per_split is None:
        return []
    return ["", "Labelled points by who placed them; an annotation whose points have several sources",
            "lists them, point by point, in `spinetrack.point_sources`.",
            *_by_split_table("Point source", per_split)]


def render_card(manifest: ReleaseManifest) -> str:
    """Markdown dataset card for a release."""
    m = manifest
    c = m.counts
    total_instances = sum(s.instances for s in c.splits.values())
    total_images = sum(s.images for s in c.splits.values())
    lines = [
        f"# {m.name} {m.version}",
        "",
        "Spine-keypoint dataset: 37 keypoints per person (COCO-17, Halpe26 feet, and 9 spine points from",
        "sacrum to skull), in COCO keypoint format, one `person` category.",
        "",
        *_table(["", ""], [
            ["version", m.version],
            ["parent", m.parent or "none (first release)"],
            ["created (UTC)", m.created_at.strftime("%Y-%m-%d %H:%M:%S")],
            ["store snapshot", f"`{m.snapshot_id}`"],
            ["images / instances", f"{total_images} / {total_instances}"],
            ["split fractions for new groups",
             " / ".join(f"{k} {m.split_fractions[k]:.0%}" for k in _in_split_order(m.split_fractions))],
            ["images", "copied into `images/`" if m.images == "copied"
             else "referenced: `file_name` is relative to `$SPINETRACK_HOME`"],
        ]),
    ]
    if m.notes:
        lines += ["", "## Notes", "", m.notes]
    lines += [
        "",
        "## How it was made",
        "",
        "- **Synthetic** frames: characters rendered in Unreal Engine; an OpenSim full-body model with an",
        "  articulated lumbar spine is scaled and fitted by inverse kinematics to each frame's bones; spine",
        "  landmarks are markers on the vertebral bodies, projected with the render camera; visibility",
        "  comes from image bounds, scene depth and the actor mask. IK residuals are kept per label.",
        "- **Real** images: a pose model pre-annotates them (pseudo labels); an active-learning loop sends",
        "  the most uncertain ones to annotators in Label Studio, accepts confident predictions",
        "  (`pseudo-accepted`) under a calibrated threshold, fine-tunes the model and repeats.",
        "- **Splits** are grouped: every frame of one rendered sequence or one source video is in the same",
        "  split, and a group keeps its split in every later release.",
        "",
        "## Splits",
        "",
        *_table(["split", "images", "instances", "groups"],
                [[name, c.splits[name].images, c.splits[name].instances, c.splits[name].groups]
                 for name in _in_split_order(c.splits)]),
        *_by_split_table("Image source", c.image_sources),
        *_by_split_table("Subset", c.subsets),
        "",
        "## Provenance",
        "",
        "Where each instance's label comes from (revision source): `synthetic` render + OpenSim,",
        "`human` annotator, `review` reviewer, `pseudo-accepted` confident model output, `import` ground",
        "truth from an input file.",
        *_by_split_table("Revision source", c.revision_sources),
        *_point_sources(c.point_sources),
        *_by_split_table("Round", c.rounds),
    ]
    if m.model_versions:
        lines += ["", "### Models whose output is in the release", "",
                  *_table(["model", "instances", "config", "trained on snapshot", "checkpoint sha256"],
                          [[mv.name, mv.instances, mv.config_name or "", mv.data_snapshot or "",
                            (mv.checkpoint_sha256 or "")[:16]] for mv in m.model_versions])]
    spine = set(SPINE_CHAIN)
    lines += [
        "",
        "## Keypoints",
        "",
        "Visibility: v=2 visible, v=1 labelled but occluded, v=0 not labelled.",
        "",
        *_table(
            ["idx", "name", "meaning", "OKS sigma", "spine", "v=2", "v=1", "v=0"],
            [[k.index, k.name, k.meaning, k.sigma, "yes" if k.index in spine else "",
              c.keypoint_visibility[k.name].v2, c.keypoint_visibility[k.name].v1,
              c.keypoint_visibility[k.name].v0] for k in KEYPOINTS],
        ),
        "",
        "## Changes" + (f" since {m.changelog.parent}" if m.changelog.parent else ""),
        "",
        f"- added instances ({len(m.changelog.added)}): {_ids(m.changelog.added)}",
        f"- removed instances ({len(m.changelog.removed)}): {_ids(m.changelog.removed)}",
        f"- relabelled instances ({len(m.changelog.relabelled)}): {_ids(m.changelog.relabelled)}",
        "",
        "## Files",
        "",
        *_table(["file", "bytes", "sha256"],
                [[f"`{f.path}`", f.bytes, f"`{f.sha256}`"] for f in m.files
                 if not f.path.startswith("images/")]),
        "",
        f"Plus {sum(1 for f in m.files if f.path.startswith('images/'))} image files under `images/`;"
        " every file's sha256 is in `manifest.json`.",
        "",
        "## Use",
        "",
        "```python",
        "from pycocotools.coco import COCO",
        "coco = COCO('annotations/train.json')  # 37 keypoints, category 1 'person'",
        "```",
        "",
        *(card_lines() if has_kit(f.path for f in m.files) else []),  # releases made before have none
        "Annotation ids are the store's instance ids and stay the same across releases;",
        "`spinetrack release-reproduce VERSION DIR` rebuilds this release byte for byte.",
        "",
    ]
    return "\n".join(lines)
