"""Review of labels in FiftyOne: load a release or the working set, serve the App, sync tags back.

- `setup`: import fiftyone with its database under the store's home; dataset names; the skeleton.
- `samples`: the store's labels as FiftyOne samples (bulk-loaded), their fields, colours and views.
- `tags`: reviewer tags back into the store: accept / needs-fix as `review` revisions, others as
  ReviewTag rows.
- `server`: the App on loopback, kept up across browser reloads.

`annotation.fiftyone_review` re-exports the same names (the import path used before the split).
"""

from annotation.fiftyone.samples import (
    COLOURS,
    VIEW_NAMES,
    build_samples,
    declare_fields,
    latest_predictions,
    load_into_fiftyone,
    review_counts,
    save_views,
)
from annotation.fiftyone.server import keep_serving, launch
from annotation.fiftyone.setup import (
    database_dir,
    database_name,
    dataset_name,
    fiftyone_module,
    running_database_dirs,
    skeleton,
    spine_skeleton,
)
from annotation.fiftyone.tags import (
    ACCEPT,
    DECISION_TAGS,
    LABEL_FIELDS,
    NEEDS_FIX,
    Decision,
    ReviewSync,
    sync_review,
    sync_review_tags,
    tagged_instances,
)
from annotation.labelstudio.agreement import DISAGREEMENT_BELOW

__all__ = [
    "ACCEPT",
    "COLOURS",
    "DECISION_TAGS",
    "DISAGREEMENT_BELOW",
    "LABEL_FIELDS",
    "NEEDS_FIX",
    "VIEW_NAMES",
    "Decision",
    "ReviewSync",
    "build_samples",
    "database_dir",
    "database_name",
    "dataset_name",
    "declare_fields",
    "fiftyone_module",
    "keep_serving",
    "latest_predictions",
    "launch",
    "load_into_fiftyone",
    "review_counts",
    "running_database_dirs",
    "save_views",
    "skeleton",
    "spine_skeleton",
    "sync_review",
    "sync_review_tags",
    "tagged_instances",
]
