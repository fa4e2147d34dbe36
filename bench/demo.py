"""How long does `make demo` take from a fresh clone? (issue 8: under 15 minutes on this machine)

Two parts, each timed on its own and added up:
- set-up: `make venvs` in a fresh `git clone` of this checkout (what `make demo` runs first: both
  virtualenvs side by side, scripts/bootstrap_all.sh; pip's wheel cache on this machine is warm,
  as it is for anyone's second clone);
  `--no-setup` reuses this checkout's virtualenvs instead;
- the demo itself: `spinetrack --json demo` with an empty SPINETRACK_HOME (nothing to resume),
  with the demo's own per-step seconds and the body AP it prints.

The demo leaves its Label Studio server running (as `make demo` does for the user); this script
stops it afterwards. Writes bench/results/demo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import Run  # noqa: E402

LIMIT_S = 15 * 60
#: What `make demo` builds before it runs the demo (Makefile).
SETUP_TARGETS = ("venvs",)


def timed(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, int, str]:
    start = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    return time.perf_counter() - start, proc.returncode, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-setup", action="store_true", help="reuse this checkout's virtualenvs")
    parser.add_argument("--work", type=Path, default=None, help="folder for the clone and the store")
    parser.add_argument("--out", default="demo", help="a bare name goes to bench/results/NAME.json")
    args = parser.parse_args()

    run = Run()
    work = args.work or Path(tempfile.mkdtemp(prefix="spinetrack-demo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPINETRACK_", "VIRTUAL_ENV"))}
    result: dict[str, Any] = {"limit_s": LIMIT_S}
    if args.no_setup:
        checkout = REPO
        result["setup"] = {"skipped": "reused this checkout's .venv and .venv-labelstudio"}
    else:
        # beside this checkout, so ../shared resolves as it does for the checkout itself
        checkout = REPO.parent / f"demo-bench-clone-{os.getpid()}"
        shutil.rmtree(checkout, ignore_errors=True)
        subprocess.run(["git", "clone", "-q", str(REPO), str(checkout)], check=True)
        command = ["make", *SETUP_TARGETS]
        seconds, code, _ = timed(command, checkout, env, work / "setup.log")
        result["setup"] = {"seconds": round(seconds, 1), "returncode": code, "command": " ".join(command),
                           "log": str(work / "setup.log")}
        if code != 0:
            raise SystemExit(f"set-up failed ({code}); see {work / 'setup.log'}")

    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    env_demo = {**env, "SPINETRACK_HOME": str(home),
                "SPINETRACK_LS_VENV": str(checkout / ".venv-labelstudio")}
    seconds, code, stdout = timed([str(checkout / ".venv" / "bin" / "spinetrack"), "--json", "demo"],
                                  checkout, env_demo, work / "demo.log")
    demo: dict[str, Any] = {"seconds": round(seconds, 1), "returncode": code, "log": str(work / "demo.log")}
    try:
        demo["output"] = json.loads(stdout)
    except json.JSONDecodeError:
        demo["stdout_tail"] = stdout[-2000:]
    result["demo"] = demo
    subprocess.run([str(checkout / ".venv" / "bin" / "spinetrack"), "labelstudio", "stop"], cwd=checkout,
                   env=env_demo, capture_output=True)
    total = demo["seconds"] + float(result["setup"].get("seconds", 0.0))
    result["total_s"] = round(total, 1)
    result["under_limit"] = bool(code == 0 and total < LIMIT_S)
    print(json.dumps({k: v for k, v in result.items()}, indent=1))
    print(run.write(result, args.out))
    if not args.no_setup and code == 0:
        shutil.rmtree(checkout, ignore_errors=True)


if __name__ == "__main__":
    main()
