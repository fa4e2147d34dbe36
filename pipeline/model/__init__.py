"""The 37-keypoint pose model (RTMPose on mmpose): configs, dataset, losses, training, registry.

`compat` is imported first: it makes `import mmpose` work on this CPU stack (see compat.py). The
dataset and loss modules are imported for their side effect of registering SpineTrack's classes in
mmpose's registries, so any config from `configs.build_config` can be built right away.
"""

from pipeline.model import compat

compat.install()

from pipeline.model import blaze37, dataset, losses  # noqa: E402  (registers into mmpose's registries)

__all__ = ["blaze37", "compat", "dataset", "losses"]
