"""Screenshot of SpineTrack's Label Studio labeling view in a real browser (headless Chromium).

Starts a real Label Studio (own virtualenv, temporary data), renders one synthetic person with the
reference renderer, stores its landmarks, pushes a model-like proposal (jittered, two points marked
occluded) through the real `push`, logs in with Chromium (Debian's `chromium`, driven over the
DevTools protocol) and saves the labeling page, then the same page with a point selected (its
visibility choice shown):

    .venv/bin/python scripts/screenshot_labelstudio.py [--out docs/img] [--keep]

Writes OUT/labelstudio-labeling.png and OUT/labelstudio-point-selected.png. Nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from annotation.labelstudio.client import connection_of  # noqa: E402
from annotation.labelstudio.push import push  # noqa: E402
from annotation.labelstudio.server import LabelStudioServer, start_server, stop_server  # noqa: E402
from pipeline.store import Store  # noqa: E402
from schemas.keypoints import INDEX, NUM_KEYPOINTS  # noqa: E402
from synthetic.sample_set import SequenceSpec, render_set, store_ground_truth  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--mute-audio"]
VIEWPORT = (1600, 1000)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_task(home: Path, server: LabelStudioServer) -> tuple[int, int]:
    """One rendered person in the store, pushed with a proposal; returns (project id, task id)."""
    store = Store(home=home)
    folder = render_set(home / "renders", [SequenceSpec("squat", 2, 1, width=480, height=640)])[0]
    store_ground_truth(store, folder)
    (label,) = store.current_labels()
    rng = random.Random(3)
    kps = list(label.keypoints)
    for i in range(NUM_KEYPOINTS):  # a model's guess: a few pixels off
        if kps[3 * i + 2] > 0:
            kps[3 * i] += rng.uniform(-3, 3)
            kps[3 * i + 1] += rng.uniform(-3, 3)
    for name in ("right_wrist", "right_heel"):  # shown as occluded
        if kps[3 * INDEX[name] + 2] > 0:
            kps[3 * INDEX[name] + 2] = 1
    store.add_revision(label.instance_id, kps, label.bbox, source="pseudo", accepted=False,
                       model_version="screenshot-model", uncertainty=0.4)
    report = push(store, [label.instance_id], 1, conn=connection_of(server))
    store.engine.dispose()
    return report.project_id, report.task_ids[label.instance_id]


class Browser:
    """Headless Chromium over the DevTools protocol (one page)."""

    def __init__(self, profile: Path) -> None:
        from websockets.sync.client import connect

        self.port = _free_port()
        self.proc = subprocess.Popen(
            ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             f"--remote-debugging-port={self.port}", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        page = self._page_target()
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.next_id = 0
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=VIEWPORT[0], height=VIEWPORT[1],
                  deviceScaleFactor=1, mobile=False)

    def _page_target(self) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=5) as r:
                    pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
                if pages:
                    return dict(pages[0])
            time.sleep(0.3)
        raise RuntimeError("chromium did not open its DevTools port")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=120))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        out = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        return out.get("result", {}).get("value")

    def goto(self, url: str, settle_s: float = 1.0) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")
        time.sleep(settle_s)

    def wait_for(self, condition: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):
                if self.evaluate(f"Boolean({condition})"):
                    return
            time.sleep(0.5)
        raise TimeoutError(f"page never satisfied: {condition}")

    def key(self, key: str, code: str, key_code: int, modifiers: int = 0) -> None:
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key=key, code=code, modifiers=modifiers,
                      windowsVirtualKeyCode=key_code)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        print(f"wrote {path}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@contextlib.contextmanager
def browser(profile: Path) -> Iterator[Browser]:
    b = Browser(profile)
    try:
        yield b
    finally:
        b.close()


def session_cookies(server: LabelStudioServer) -> list[dict[str, Any]]:
    """Log in as the server's user the way the login form does (CSRF token, then POST)."""
    import re

    import httpx

    with httpx.Client(base_url=server.url, timeout=60, follow_redirects=False) as http:
        page = http.get("/user/login/")
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        if match is None:
            raise RuntimeError("no CSRF token on Label Studio's login page")
        done = http.post("/user/login/", data={"csrfmiddlewaretoken": match.group(1), "email": server.email,
                                               "password": server.password},
                         headers={"Referer": f"{server.url}/user/login/"})
        if done.status_code not in (302, 303) or "sessionid" not in http.cookies:
            raise RuntimeError(f"Label Studio login failed (HTTP {done.status_code})")
        return [{"name": name, "value": value, "url": server.url} for name, value in http.cookies.items()]


def log_in(b: Browser, server: LabelStudioServer) -> None:
    b.call("Network.enable")
    b.call("Network.setCookies", cookies=session_cookies(server))
    b.goto(f"{server.url}/projects/")
    # the editor's "Show region labels" stays off, as the instructions ask: names on selection only


def select_region(b: Browser, name: str) -> None:
    """Select the region called `name`, as a click on it in the regions list does."""
    how = b.evaluate(
        "(() => { const name = " + json.dumps(name) + ";"
        " const a = window.Htx && window.Htx.annotationStore && window.Htx.annotationStore.selected;"
        " if (a) { const r = a.regionStore.regions.find(r => (r.labels || []).includes(name)"
        "   || r.labelName === name); if (r) { a.selectArea(r); return 'store'; } }"
        " const hits = [...document.querySelectorAll('body *')].filter(e =>"
        "   [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim() === name));"
        " if (!hits.length) return 'none';"
        " const left = e => e.getBoundingClientRect().left;"
        " const item = hits.sort((x, y) => left(y) - left(x))[0];"
        " item.scrollIntoView(); item.click(); return 'click'; })()"
    )
    print(f"selected {name} by {how}")
    if how == "none":
        raise RuntimeError(f"no region {name!r} on the page")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (data, profile)")
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        sys.exit("chromium not found: scripts/system_packages.sh installs it (Debian package `chromium`)")
    work = Path(tempfile.mkdtemp(prefix="spinetrack-ls-shot-"))
    args.out.mkdir(parents=True, exist_ok=True)
    server = start_server(work / "labelstudio", document_root=work / "home")
    try:
        (work / "home").mkdir(exist_ok=True)
        project_id, task_id = prepare_task(work / "home", server)
        with browser(work / "chromium-profile") as b:
            log_in(b, server)
            b.goto(f"{server.url}/projects/{project_id}/data?tab=0&task={task_id}", settle_s=2.0)
            b.wait_for("document.querySelector('canvas') && document.querySelectorAll('canvas').length > 0")
            time.sleep(6.0)  # the image, the pre-annotation and the palette render after the canvas
            b.screenshot(args.out / "labelstudio-labeling.png")
            select_region(b, "right_wrist")  # as a click on it in the regions list does
            time.sleep(2.0)
            b.screenshot(args.out / "labelstudio-point-selected.png")
    finally:
        stop_server(server)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
