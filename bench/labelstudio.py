"""Label Studio round trip speed: SpineTrack push/pull vs FiftyOne's Label Studio backend vs plain SDK calls.

One real Label Studio server (fresh SQLite data dir), the same N person instances on the same image files:
- spinetrack: `push` (bulk import, predictions inline) and `pull` (incremental Data Manager query);
- fiftyone:  `dataset.annotate(backend="labelstudio")` with the same keypoints as existing labels, then
  `dataset.load_annotations` after the same annotations were made;
- sdk-one-by-one: `tasks.create` + `predictions.create` per task, then `annotations.list` per task
  (what a script without bulk calls does), on a subset and reported per task.
Annotations are made untimed with Label Studio's bulk "predictions to annotations" action (the same for
all three); the simulated annotator's own speed is measured separately on a subset.

    .venv/bin/python bench/labelstudio.py --n 1000
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image as PILImage  # noqa: E402

from annotation.labelstudio.client import connect, connection_of  # noqa: E402
from annotation.labelstudio.convert import to_result  # noqa: E402
from annotation.labelstudio.pull import pull  # noqa: E402
from annotation.labelstudio.push import image_url, push  # noqa: E402
from annotation.labelstudio.server import ls_version, start_server, stop_server  # noqa: E402
from annotation.simulated_annotator import AnnotatorProfile, annotate_tasks  # noqa: E402
from bench.common import Run  # noqa: E402
from pipeline.store import Store  # noqa: E402
from schemas.keypoints import NAMES, NUM_KEYPOINTS  # noqa: E402

SIZES = [(333, 217), (217, 333), (641, 479), (160, 120)]


def make_store(home: Path, root: Path, n: int) -> tuple[Store, list[int], dict[int, Any]]:
    store = Store(home=home)
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    ids, truth = [], {}
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        path = folder / f"{i:05d}.png"
        PILImage.new("RGB", (w, h), (i % 256, (i // 256) % 256, 90)).save(path)
        image_id = store.add_image(path, source="real", subset="bench", group_key=f"g{i}", width=w, height=h)
        iid = store.instance_id(image_id, "p0")
        kps: list[float] = []
        for _ in range(NUM_KEYPOINTS):
            kps += [round(rng.uniform(0, w), 2), round(rng.uniform(0, h), 2), 2.0]
        box = [0.0, 0.0, float(w), float(h)]
        store.add_revision(
            iid, kps, box, source="pseudo", accepted=False, model_version="bench", uncertainty=0.3
        )
        store.add_revision(iid, kps, box, source="import", accepted=False, external_id=f"truth:{i}")
        ids.append(iid)
        truth[iid] = (kps, box)
    return store, ids, truth


def accept_predictions(client: Any, project_id: int) -> None:
    """Untimed: every task gets one annotation equal to its prediction (Label Studio's own bulk action)."""
    client.actions.create(
        id="predictions_to_annotations", project=project_id, selected_items={"all": True, "excluded": []}
    )


def bench_spinetrack(
    server: Any, store: Store, ids: list[int], truth: dict[int, Any], simulate: int
) -> dict[str, Any]:
    conn = connection_of(server)
    client = connect(conn)
    t0 = time.perf_counter()
    report = push(store, ids, round=1, conn=conn, client=client)
    push_s = time.perf_counter() - t0
    accept_predictions(client, report.project_id)
    t0 = time.perf_counter()
    got = pull(store, conn=conn, client=client)
    pull_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = pull(store, conn=conn, client=client)
    repull_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    repush = push(store, ids, round=1, conn=conn, client=client)
    repush_s = time.perf_counter() - t0
    assert len(report.created) == len(ids) and got.stored == len(ids) and again.stored == 0
    assert not repush.created
    humans = {r.instance_id: r.keypoints for r in store.revisions_for(sources=["human"])}
    exact = sum(humans[iid] == truth[iid][0] for iid in ids)
    # the simulated annotator (benchmark tool) on a second round: its throughput bounds loop speed
    sub = ids[:simulate]
    second = push(store, sub, round=2, conn=conn, client=client)
    t0 = time.perf_counter()
    sim = annotate_tasks(
        client, second.project_id, truth.get, profile=AnnotatorProfile(pixel_noise=2.0), seed=0,
        task_ids=list(second.task_ids.values()),
    )  # fmt: skip
    annotate_s = time.perf_counter() - t0
    sim_pull = pull(store, conn=conn, client=client)
    return {
        "tasks": len(report.created),
        "push_s": push_s,
        "push_tasks_per_s": len(report.created) / push_s,
        "annotations": got.stored,
        "pull_s": pull_s,
        "pull_annotations_per_s": got.stored / pull_s,
        "pixel_exact_after_round_trip": f"{exact}/{len(ids)}",
        "second_pull_noop_s": repull_s,
        "second_push_noop_s": repush_s,
        "simulated_annotator_tasks": len(sim.annotated),
        "simulated_annotator_tasks_per_s": len(sim.annotated) / annotate_s,
        "simulated_pull_stored": sim_pull.stored,
    }


def bench_fiftyone(server: Any, store: Store, ids: list[int], named: bool) -> dict[str, Any]:
    """FiftyOne's own Label Studio backend on the same images and keypoints.

    named=True: one FiftyOne Keypoint per SpineTrack keypoint, labelled with its name (what SpineTrack
    needs). named=False: one Keypoint "person" with all 37 points (point names lost; FiftyOne's layout).
    """
    os.environ["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "true"
    os.environ["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = server.document_root
    out: dict[str, Any] = {
        "tasks": len(ids),
        "layout": "37 named keypoints" if named else "one 37-point person",
    }
    name = f"bench_ls_{os.getpid()}_{int(named)}"  # also the annotation run key: a valid identifier
    try:
        import fiftyone as fo

        rows = store.images_of(ids)
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
        dataset = fo.Dataset(name)
        samples = []
        for iid in ids:
            img = rows[iid]
            rev = next(r for r in store.revisions(iid) if r.source == "pseudo")
            pts = [
                (rev.keypoints[3 * k] / img.width, rev.keypoints[3 * k + 1] / img.height)
                for k in range(NUM_KEYPOINTS)
            ]
            if named:
                kps = fo.Keypoints(
                    keypoints=[fo.Keypoint(label=NAMES[k], points=[pts[k]]) for k in range(NUM_KEYPOINTS)]
                )
            else:
                kps = fo.Keypoints(keypoints=[fo.Keypoint(label="person", points=pts)])
            samples.append(fo.Sample(filepath=img.path, kp=kps))
        dataset.add_samples(samples)
        del samples  # FiftyOne reloads every live in-memory Sample on label merges: keep none around
        gc.collect()
        t0 = time.perf_counter()
        dataset.annotate(
            name, backend="labelstudio", label_field="kp", label_type="keypoints",
            classes=list(NAMES) if named else ["person"], url=server.url, api_key=server.token,
            launch_editor=False,
        )  # fmt: skip
        out["push_s"] = time.perf_counter() - t0
        out["push_tasks_per_s"] = len(ids) / out["push_s"]
        results = dataset.load_annotation_results(name)
        client = connect(connection_of(server))
        accept_predictions(client, int(results.project_id))
        made = len(ids)
        out["annotations"] = made
        t0 = time.perf_counter()
        dataset.load_annotations(name, cleanup=False)
        out["pull_s"] = time.perf_counter() - t0
        out["pull_annotations_per_s"] = made / out["pull_s"]
    except Exception as exc:  # report, do not hide: the comparison says why it is missing
        out["error"] = f"{exc.__class__.__name__}: {exc}"
        out["traceback"] = traceback.format_exc()[-2000:]
    finally:
        try:
            import fiftyone as fo

            if fo.dataset_exists(name):
                fo.delete_dataset(name)
        except Exception:
            pass
    return out


def bench_sdk_one_by_one(server: Any, store: Store, ids: list[int], truth: dict[int, Any]) -> dict[str, Any]:
    conn = connection_of(server)
    client = connect(conn)
    project = client.projects.create(title="bench one by one", label_config=_config())
    project_id = int(project.id or 0)
    client.import_storage.local.create(project=project_id, path=str(Path(server.document_root) / "images"))
    rows = store.images_of(ids)
    task_ids = []
    t0 = time.perf_counter()
    for iid in ids:
        img = rows[iid]
        rev = next(r for r in store.revisions(iid) if r.source == "pseudo")
        task = client.tasks.create(
            project=project_id, data={"image": image_url(img.path, server.document_root)}
        )
        client.predictions.create(
            task=int(task.id or 0), result=to_result(rev.keypoints, rev.bbox, img.width, img.height),
            model_version="bench", score=0.7,
        )  # fmt: skip
        task_ids.append(int(task.id or 0))
    push_s = time.perf_counter() - t0
    for tid, iid in zip(task_ids, ids, strict=True):
        img = rows[iid]
        client.annotations.create(
            id=tid, result=to_result(truth[iid][0], truth[iid][1], img.width, img.height)
        )
    t0 = time.perf_counter()
    n = sum(len(client.annotations.list(id=tid)) for tid in task_ids)
    pull_s = time.perf_counter() - t0
    return {
        "tasks": len(ids),
        "push_s": push_s,
        "push_tasks_per_s": len(ids) / push_s,
        "annotations": n,
        "pull_s": pull_s,
        "pull_annotations_per_s": n / pull_s,
    }


def _config() -> str:
    from annotation.labelstudio.config import label_config

    return label_config()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1000, help="tasks pushed and annotations pulled")
    parser.add_argument("--one-by-one", type=int, default=100, help="tasks for the plain-SDK baseline")
    parser.add_argument("--simulate", type=int, default=50, help="tasks for the simulated annotator")
    parser.add_argument("--skip-fiftyone", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "labelstudio.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ls-"))
    bench_run = Run()
    out: dict[str, Any] = {
        "n": args.n,
        "label_studio": ls_version(),
    }
    server = None
    try:
        t0 = time.perf_counter()
        server = start_server(work / "ls-data", document_root=work / "docroot")
        out["server_start_s"] = time.perf_counter() - t0
        print(
            f"Label Studio {out['label_studio']} up in {out['server_start_s']:.1f} s at {server.url}",
            flush=True,
        )
        store, ids, truth = make_store(work / "home", work / "docroot", args.n)
        out["spinetrack"] = bench_spinetrack(server, store, ids, truth, args.simulate)
        print("spinetrack", json.dumps(out["spinetrack"], indent=1), flush=True)
        if not args.skip_fiftyone:
            for named in (True, False):
                key = "fiftyone_named_keypoints" if named else "fiftyone_single_person_keypoint"
                out[key] = bench_fiftyone(server, store, ids, named)
                print(
                    key,
                    json.dumps({k: v for k, v in out[key].items() if k != "traceback"}, indent=1),
                    flush=True,
                )
        out["sdk_one_by_one"] = bench_sdk_one_by_one(server, store, ids[: args.one_by_one], truth)
        print("sdk one by one", json.dumps(out["sdk_one_by_one"], indent=1), flush=True)
    finally:
        if server is not None:
            stop_server(server)
        shutil.rmtree(work, ignore_errors=True)
    bench_run.write(out, args.out, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
