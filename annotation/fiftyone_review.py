"""Compatibility import path: the FiftyOne review lives in the `annotation.fiftyone` package
(setup, samples, tags, server). Everything public is re-exported here."""

from annotation.fiftyone import *  # noqa: F403
from annotation.fiftyone import __all__ as __all__
from annotation.fiftyone.server import is_loopback as _is_loopback  # noqa: F401  (used before the split)
