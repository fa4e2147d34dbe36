"""How fast does `spinetrack` answer when it should not do any work? (issue 10, "The CLI")

Three cases, each the median wall time of several fresh interpreters, against `python -c pass` in
the same run, for this checkout and for the CLI before the change (commit BASELINE, unpacked with
`git archive` into a temporary folder and run with the same interpreter and packages):

- `spinetrack --help`
- an argument error: `spinetrack import-real` (the required COCO file missing)
- a bad path: `spinetrack import-real /nope.json --images <tmp>` (before: the flow and Prefect's
  temporary server started first, then a traceback)

Writes bench/results/cli.json. `--runs N` (default 5), `--no-baseline` to skip the old CLI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import Run  # noqa: E402

#: The commit before the CLI work of issue 10 (help 3.8 s, bad path ~14 s + traceback in the issue).
BASELINE = "16d224c"


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, int]:
    """Wall seconds, exit code, lines of output of one run."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    return elapsed, proc.returncode, len((proc.stdout + proc.stderr).splitlines())


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.argv = ['spinetrack', *{args!r}]; "
                                  "from flows.cli import main; main()"]


def measure(argv: list[str], cwd: Path, env: dict[str, str], runs: int) -> dict[str, object]:
    times, codes, lines = [], set(), set()
    for _ in range(runs):
        t, code, n = _run(argv, cwd, env)
        times.append(t)
        codes.add(code)
        lines.add(n)
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "runs": runs, "exit_codes": sorted(codes), "output_lines": sorted(lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-runs", type=int, default=3, help="runs of the old CLI's bad path (slow)")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()

    bench_run = Run()
    work = Path(tempfile.mkdtemp(prefix="spinetrack-bench-cli-"))
    env = {**os.environ, "SPINETRACK_HOME": str(work / "home"), "PREFECT_HOME": str(work / "prefect"),
           "COLUMNS": "120"}
    env.pop("SPINETRACK_DB_URL", None)
    (work / "home").mkdir()
    images = work / "images"
    images.mkdir()
    cases = {
        "help": ["--help"],
        "argument_error": ["import-real"],
        "bad_path": ["import-real", "/nope.json", "--images", str(images)],
    }
    result: dict[str, object] = {"benchmark": "cli", "runs": args.runs}
    try:
        python = measure([sys.executable, "-c", "pass"], REPO, env, args.runs)
        result["python_c_pass"] = python
        now = {name: measure(_cli(argv), REPO, env, args.runs) for name, argv in cases.items()}
        result["now"] = now
        base_s = float(python["median_s"])  # type: ignore[arg-type]
        result["now_vs_python"] = {k: round(float(v["median_s"]) / base_s, 1) for k, v in now.items()}  # type: ignore[arg-type]
        if not args.no_baseline:
            old = work / "baseline"
            old.mkdir()
            archive = subprocess.run(["git", "archive", BASELINE], cwd=REPO, capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
            old_env = {**env, "PYTHONPATH": str(old)}
            before = {name: measure(_cli(argv), old, old_env,
                                    args.baseline_runs if name == "bad_path" else args.runs)
                      for name, argv in cases.items()}
            result["baseline"] = {"commit": BASELINE, **before}
            result["speedup_vs_baseline"] = {
                k: round(float(before[k]["median_s"]) / float(now[k]["median_s"]), 1)  # type: ignore[arg-type]
                for k in cases
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["load_average"] = {**bench_run.load_average(),
                              "note": "shared 2-core machine, several helpers working: numbers under load"}
    out = bench_run.write(result, "cli")
    print(f"python -c pass: {python['median_s']} s")
    for name in cases:
        line = f"{name:>15}: {now[name]['median_s']} s ({result['now_vs_python'][name]}x python -c pass)"  # type: ignore[index]
        if "baseline" in result:
            line += (f"; before {result['baseline'][name]['median_s']} s "  # type: ignore[index]
                     f"-> {result['speedup_vs_baseline'][name]}x faster")  # type: ignore[index]
        print(line)
    print(f"load average {result['load_average']}; wrote {out}")


if __name__ == "__main__":
    main()
