"""The dataset store (SQLAlchemy): images, instances, append-only annotation revisions."""

from pipeline.store.store import (
    HUMAN_SOURCES,
    SOURCES,
    HumanPoints,
    Label,
    NewImage,
    NewLabel,
    NewRevision,
    Store,
    WrittenLabel,
    file_sha256,
    spinetrack_home,
)

__all__ = [
    "HUMAN_SOURCES",
    "SOURCES",
    "HumanPoints",
    "Label",
    "NewImage",
    "NewLabel",
    "NewRevision",
    "Store",
    "WrittenLabel",
    "file_sha256",
    "spinetrack_home",
]
