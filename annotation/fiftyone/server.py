"""The FiftyOne App for a reviewer: served on loopback, kept up when the browser tab reloads or closes."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

log = logging.getLogger(__name__)

#: `Session.wait(timeout)` returns once every App tab has been gone for `timeout` seconds, which a
#: page reload (or a closed tab the reviewer reopens) triggers; negative waits until Ctrl-C.
WAIT_FOREVER = -1


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def launch(dataset: Any, port: int = 5151, address: str = "127.0.0.1", *, wait: bool = False) -> Any:
    """Serve the FiftyOne App for `dataset` on `address:port` (loopback by default); returns the session.

    The App runs as a server process (remote mode: no browser is opened here); open
    http://127.0.0.1:PORT in a browser on this machine, or tunnel the port. `wait` blocks until
    the process is interrupted (Ctrl-C), whatever the browser tabs do.
    """
    if not is_loopback(address):
        log.warning("the FiftyOne App listens on %s, not loopback: anyone on that network can open it",
                    address)
    import fiftyone as fo

    session = fo.launch_app(dataset, port=port, address=address, remote=True)
    if wait:
        keep_serving(session)
    return session


def keep_serving(session: Any) -> None:
    """Block until Ctrl-C. FiftyOne's default `session.wait()` returns as soon as no App tab has
    been connected for 3 s, so a reviewer's page reload or closed tab would stop `spinetrack review`."""
    session.wait(WAIT_FOREVER)
