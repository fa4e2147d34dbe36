"""Entry point of the `spinetrack` command: imports each flows module so its commands register.

The modules are light (prefect, torch, FiftyOne and the Label Studio SDK load inside the commands,
see flows/lazy.py), so listing the commands costs well under a second.
"""

from __future__ import annotations

import importlib

from flows.app import app

#: Modules that add commands to `app`. Each one is a thin Prefect flow layer.
COMMAND_MODULES = (
    "flows.synthetic",
    "flows.export",
    "flows.model",
    "flows.model_export",
    "flows.annotators",
    "flows.release",
    "flows.backup",
    "flows.review",
    "flows.annotation",
    "flows.active_learning",
    "flows.demo",
    "flows.deploy",
)


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name)


def main() -> None:
    _register()
    app()


if __name__ == "__main__":
    main()
