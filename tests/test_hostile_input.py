"""Hostile and broken input, tried systematically (issue 20, item 5): table-driven cases over the
render contract, COCO files, Label Studio results and the webhook receiver.

Every case is refused with one error naming the file (or server, task and annotation) and, where
it applies, the field: `InputError`, which the CLI prints as one line with exit code 2 (a command
per input kind is run to show it); the webhook answers 4xx. After every case the store is as it
was: no image, instance, revision or ingest record, and no pull run.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from annotation.labelstudio.client import connect, connection_of
from annotation.labelstudio.convert import result_problem
from annotation.labelstudio.pull import pull
from annotation.labelstudio.push import push
from annotation.labelstudio.server import LabelStudioServer
from annotation.labelstudio.webhook import SECRET_HEADER, PullOnWebhook
from pipeline.intake.real_import import import_coco
from pipeline.store import Store
from pipeline.store.models import AnnotationTask, Image, IngestRecord, Instance, Revision
from schemas.errors import InputError
from synthetic.ingest import ingest_sequence
from synthetic.sample_set import SequenceSpec, render_set

REPO = Path(__file__).resolve().parents[1]
NAN, INF = float("nan"), float("inf")
Mutation = Callable[[Path], None]


def _rows(store: Store) -> dict[str, int]:
    with store.session() as s:
        return {t.__tablename__: int(s.scalar(select(func.count()).select_from(t)) or 0)
                for t in (Image, Instance, Revision, IngestRecord, AnnotationTask)}


def _spinetrack(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPINETRACK_HOME": str(home), "COLUMNS": "200"}
    env.pop("SPINETRACK_DB_URL", None)
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [x for x in (done.stdout + done.stderr).splitlines() if x.strip()]
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, lines)
    return lines[0]


# -- the render contract -----------------------------------------------------------------------
def _json(rel: str, change: Callable[[Any], Any]) -> Mutation:
    def mutate(folder: Path) -> None:
        data = json.loads((folder / rel).read_text())
        (folder / rel).write_text(json.dumps(change(data) or data))
    return mutate


def _jsonl(rel: str, change: Callable[[list[Any]], Any]) -> Mutation:
    def mutate(folder: Path) -> None:
        rows = [json.loads(line) for line in (folder / rel).read_text().splitlines() if line.strip()]
        change(rows)
        (folder / rel).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return mutate


def _bytes(rel: str, data: bytes | Callable[[bytes], bytes]) -> Mutation:
    def mutate(folder: Path) -> None:
        path = folder / rel
        path.write_bytes(data(path.read_bytes()) if callable(data) else data)
    return mutate


def _gone(rel: str) -> Mutation:
    def mutate(folder: Path) -> None:
        path = folder / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return mutate


def _first_bone(rows: list[Any], value: Any) -> None:
    rows[0]["bones"]["pelvis"] = value


#: (case, mutation, file named by the error, field named by the error or None)
RENDER_CASES: list[tuple[str, Mutation, str, str | None]] = [
    ("sequence not JSON", _bytes("sequence.json", b"{nope"), "sequence.json", None),
    ("sequence a list", _bytes("sequence.json", b"[]"), "sequence.json", None),
    ("sequence empty", _bytes("sequence.json", b""), "sequence.json", None),
    ("fps negative", _json("sequence.json", lambda d: d.update(fps=-1)), "sequence.json", "fps"),
    ("fps a word", _json("sequence.json", lambda d: d.update(fps="fast")), "sequence.json", "fps"),
    ("width zero", _json("sequence.json", lambda d: d.update(image_width=0)), "sequence.json", "image_width"),
    ("width not the images'", _json("sequence.json", lambda d: d.update(image_width=10**9)),
     "depth/000000.npy", "image_width"),
    ("more frames than files", _json("sequence.json", lambda d: d.update(frame_count=5)), "cameras.jsonl",
     "frame"),
    ("no actors", _json("sequence.json", lambda d: d.update(actors=[])), "sequence.json", "actors"),
    ("units", _json("sequence.json", lambda d: d.update(units="furlongs")), "sequence.json", "units"),
    ("sequence id escapes", _json("sequence.json", lambda d: d.update(sequence_id="../../etc")),
     "sequence.json", "sequence_id"),
    ("camera frame missing", _jsonl("cameras.jsonl", lambda rows: rows.pop()), "cameras.jsonl", "frame"),
    ("camera NaN", _jsonl("cameras.jsonl", lambda rows: rows[0].update(fx=NAN)), "cameras.jsonl", "fx"),
    ("camera duplicate", _jsonl("cameras.jsonl", lambda rows: rows.append(dict(rows[0]))), "cameras.jsonl",
     "frame"),
    ("camera not JSON", _bytes("cameras.jsonl", b"garbage\n"), "cameras.jsonl", None),
    ("bone NaN", _jsonl("bones.jsonl", lambda rows: _first_bone(rows, [NAN, 0, 0])), "bones.jsonl",
     "bones.pelvis.0"),
    ("bone infinite", _jsonl("bones.jsonl", lambda rows: _first_bone(rows, [INF, 0, 0])), "bones.jsonl",
     "bones.pelvis.0"),
    ("bone 1e300 cm away", _jsonl("bones.jsonl", lambda rows: _first_bone(rows, [1e300, 0, 0])),
     "bones.jsonl", "bones.pelvis.0"),
    ("bone a word", _jsonl("bones.jsonl", lambda rows: _first_bone(rows, "here")), "bones.jsonl",
     "bones.pelvis"),
    ("bone missing", _jsonl("bones.jsonl", lambda rows: rows[0]["bones"].pop("pelvis")), "bones.jsonl",
     "bones"),
    ("unknown actor", _jsonl("bones.jsonl", lambda rows: rows[0].update(actor=99)), "bones.jsonl", "actor"),
    ("rgb frame missing", _gone("rgb/000001.png"), "rgb/000001.png", "frame"),
    ("rgb not an image", _bytes("rgb/000001.png", b"not an image"), "rgb/000001.png", None),
    ("rgb cut short", _bytes("rgb/000001.png", lambda data: data[: len(data) // 2]), "rgb/000001.png", None),
    ("rgb frame extra", lambda f: shutil.copy(f / "rgb/000001.png", f / "rgb/000009.png"), "rgb",
     "frame_count"),
    ("mask cut short", _bytes("mask/000000.png", lambda data: data[:60]), "mask/000000.png", None),
    ("mask not an image", _bytes("mask/000000.png", b"junk"), "mask/000000.png", None),
    ("depth not an array", lambda f: next(iter(sorted((f / "depth").iterdir()))).write_bytes(b"junk"),
     "depth/000000", None),
]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_set(tmp_path_factory.mktemp("hostile-render"), [SequenceSpec("squat", 5, 3, width=64,
                                                                               height=48)])[0]


@pytest.mark.parametrize(("case", "mutate", "named", "field"), RENDER_CASES, ids=[c[0] for c in RENDER_CASES])
def test_render_contract(case: str, mutate: Mutation, named: str, field: str | None, rendered: Path,
                         tmp_path: Path) -> None:
    folder = tmp_path / "render"
    shutil.copytree(rendered, folder)
    mutate(folder)
    with Store.open(home=tmp_path / "home") as store:
        before = _rows(store)
        with pytest.raises(InputError) as err:
            ingest_sequence(store, folder)
        assert err.value.path.startswith(str((folder / named).resolve()).split(".")[0]), err.value
        assert err.value.field == field, err.value
        assert _rows(store) == before  # nothing written, no half-claimed sequence


# -- COCO files ----------------------------------------------------------------------------------
KPS = [10, 10, 2] * 17
GOOD_COCO = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
             "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 30, 40],
                              "keypoints": KPS}],
             "categories": [{"id": 1, "name": "person"}]}


def _image(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["images"][0].update({key: value})


def _ann(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["annotations"][0].update({key: value})


#: (case, change to the COCO dict or raw bytes, file named, field named)
COCO_CASES: list[tuple[str, Any, str, str | None]] = [
    ("not JSON", b"{", "coco.json", None),
    ("a list", b"[]", "coco.json", None),
    ("no images", lambda d: d.pop("images"), "coco.json", "images"),
    ("image without width", lambda d: d["images"][0].pop("width"), "coco.json", "images[0]"),
    ("width a word", _image("width", "wide"), "coco.json", "images[0]"),
    ("width negative", _image("width", -5), "coco.json", "images[0].width"),
    ("width not the file's", _image("width", 65), "coco.json", "images[0].width"),
    ("duplicate image id", lambda d: d["images"].append(dict(d["images"][0])), "coco.json", "images[1].id"),
    ("image file missing", _image("file_name", "nope.png"), "coco.json", "images[0].file_name"),
    ("image entry a number", lambda d: d["images"].append(5), "coco.json", "images[1]"),
    ("annotations an object", lambda d: d.update(annotations={}), "coco.json", "annotations"),
    ("annotation a word", lambda d: d["annotations"].append("x"), "coco.json", "annotations[1]"),
    ("no bbox", lambda d: d["annotations"][0].pop("bbox"), "coco.json", "annotations[0]"),
    ("bbox of 3", _ann("bbox", [1, 2, 3]), "coco.json", "annotations[0].bbox"),
    ("bbox NaN", _ann("bbox", [NAN, 1, 3, 3]), "coco.json", "annotations[0].bbox"),
    ("bbox a word", _ann("bbox", "box"), "coco.json", "annotations[0].bbox"),
    ("bbox negative", _ann("bbox", [1, 1, -3, 3]), "coco.json", "annotations[0].bbox"),
    ("keypoints of 2", _ann("keypoints", [1, 2]), "coco.json", "annotations[0].keypoints"),
    ("keypoints NaN", _ann("keypoints", [NAN] * 51), "coco.json", "annotations[0].keypoints"),
    ("keypoints words", _ann("keypoints", ["a"] * 51), "coco.json", "annotations[0].keypoints"),
    ("image_id unknown", _ann("image_id", 99), "coco.json", "annotations[0].image_id"),
    ("image_id a word", _ann("image_id", "one"), "coco.json", "annotations[0].image_id"),
    ("category a word", _ann("category_id", "person"), "coco.json", "annotations[0].category_id"),
    ("id a word", _ann("id", "seven"), "coco.json", "annotations[0].id"),
    ("area a word", _ann("area", "big"), "coco.json", "annotations[0].area"),
    ("area infinite", _ann("area", INF), "coco.json", "annotations[0].area"),
    ("iscrowd a word", _ann("iscrowd", "no"), "coco.json", "annotations[0].iscrowd"),
    ("image cut short", "truncate", "a.png", "images[0].file_name"),
]


def _coco_folder(tmp_path: Path, change: Any) -> Path:
    folder = tmp_path / "coco"
    folder.mkdir()
    PILImage.new("RGB", (64, 48), (3, 4, 5)).save(folder / "a.png")
    path = folder / "coco.json"
    if isinstance(change, bytes):
        path.write_bytes(change)
        return path
    data = json.loads(json.dumps(GOOD_COCO))
    if change == "truncate":
        (folder / "a.png").write_bytes((folder / "a.png").read_bytes()[:40])
    else:
        change(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(("case", "change", "named", "field"), COCO_CASES, ids=[c[0] for c in COCO_CASES])
def test_coco_file(case: str, change: Any, named: str, field: str | None, tmp_path: Path) -> None:
    path = _coco_folder(tmp_path, change)
    with Store.open(home=tmp_path / "home") as store:
        before = _rows(store)
        with pytest.raises(InputError) as err:
            import_coco(store, path)
        assert Path(err.value.path).name == named and err.value.field == field, err.value
        assert _rows(store) == before


def test_bad_input_is_one_line_and_exit_2_from_the_cli(rendered: Path, tmp_path: Path) -> None:
    coco = _coco_folder(tmp_path, _ann("bbox", [NAN, 1, 3, 3]))
    line = _one_line(_spinetrack(tmp_path / "home", "import-real", str(coco)))
    assert str(coco) in line and "annotations[0].bbox" in line
    folder = tmp_path / "render"
    shutil.copytree(rendered, folder)
    _jsonl("bones.jsonl", lambda rows: _first_bone(rows, [1e300, 0, 0]))(folder)
    line = _one_line(_spinetrack(tmp_path / "home", "ingest", str(folder)))  # one folder, refused
    assert "bones.jsonl" in line and "bones.pelvis.0" in line
    with Store.open(home=tmp_path / "home") as store:
        assert not any(_rows(store).values())


# -- Label Studio results ------------------------------------------------------------------------
def _point(**value: Any) -> list[dict[str, Any]]:
    return [{"type": "keypointlabels", "from_name": "keypoints", "to_name": "image", "id": "p",
             "value": {"keypointlabels": ["C7"], **value}}]


#: (case, result, field named)
RESULT_CASES: list[tuple[str, Any, str]] = [
    ("result an object", {"x": 1}, "result"),
    ("item a word", ["x"], "result[0]"),
    ("value missing", [{"type": "keypointlabels"}], "result[0].value"),
    ("x missing", _point(y=5), "result[0].value.x"),
    ("x a word", _point(x="ten", y=5), "result[0].value.x"),
    ("x NaN", _point(x=NAN, y=5), "result[0].value.x"),
    ("x infinite", _point(x=5, y=-INF), "result[0].value.y"),
    ("x far outside the image", _point(x=1e9, y=5), "result[0].value.x"),
    ("x true", _point(x=True, y=5), "result[0].value.x"),
    ("labels a word", [{"type": "keypointlabels", "value": {"x": 1, "y": 1, "keypointlabels": "C7"}}],
     "result[0].value.keypointlabels"),
    ("box without height", [{"type": "rectanglelabels", "from_name": "person",
                             "value": {"x": 1, "y": 1, "width": 5}}], "result[0].value.height"),
    ("box of zero width", [{"type": "rectanglelabels", "from_name": "person",
                            "value": {"x": 1, "y": 1, "width": 0, "height": 5}}], "result[0].value.width"),
]


@pytest.mark.parametrize(("case", "result", "field"), RESULT_CASES, ids=[c[0] for c in RESULT_CASES])
def test_label_studio_result(case: str, result: Any, field: str) -> None:
    problem = result_problem(result)
    assert problem is not None and problem[0] == field, problem


def test_good_results_pass() -> None:
    assert result_problem(_point(x=0.0, y=100.0)) is None and result_problem([]) is None
    assert result_problem([{"type": "choices", "value": {"choices": ["occluded"]}}]) is None


@pytest.mark.slow
@pytest.mark.labelstudio
def test_a_hostile_annotation_on_the_real_server_stops_the_pull(labelstudio_server: LabelStudioServer,
                                                                 tmp_path: Path) -> None:
    store = Store.open(home=tmp_path / "home")
    path = tmp_path / "p.png"
    PILImage.new("RGB", (64, 48), (9, 9, 9)).save(path)
    image = store.add_image(path, source="real", subset="s", group_key="g", width=64, height=48)
    person = store.instance_id(image, "p", meta={"bbox": [2.0, 2.0, 30.0, 30.0]})
    conn = connection_of(labelstudio_server)
    task = push(store, [person], 1, conn=conn).task_ids[person]
    client = connect(conn)
    made = client.annotations.create(id=task, result=_point(x=1e9, y=5))  # Label Studio takes it as is
    before = _rows(store)
    with pytest.raises(InputError) as err:
        pull(store, conn=conn)
    assert err.value.path == f"{conn.url} task {task} annotation {made.id}"
    assert err.value.field == "result[0].value.x"
    assert _rows(store) == before  # not even the other tasks' annotations: the pull stored nothing
    store.close()


# -- the webhook receiver ------------------------------------------------------------------------
@pytest.fixture()
def receiver() -> Iterator[PullOnWebhook]:
    runs: list[int] = []
    hook = PullOnWebhook(lambda: runs.append(1), secret="s3cret").start()
    try:
        yield hook
    finally:
        hook.stop()


def _post(url: str, body: bytes, headers: dict[str, str], method: str = "POST") -> int:
    """The status of one request, sent as given (a Content-Length header is sent as is, whatever
    the body's real length: a liar's request)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.putrequest(method, parts.path)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            conn.putheader(name, value)
        conn.endheaders(body or None)
        return int(conn.getresponse().status)
    finally:
        conn.close()


OK = {SECRET_HEADER: "s3cret", "Content-Type": "application/json"}
#: (case, body, headers, method, status)
WEBHOOK_CASES: list[tuple[str, bytes, dict[str, str], str, int]] = [
    ("no secret", b'{"action": "ANNOTATION_CREATED"}', {"Content-Type": "application/json"}, "POST", 401),
    ("wrong secret", b'{"action": "ANNOTATION_CREATED"}', {**OK, SECRET_HEADER: "guess"}, "POST", 401),
    ("not JSON", b"{nope", OK, "POST", 400),
    ("JSON list", b"[1, 2]", OK, "POST", 400),
    ("not UTF-8", b"\xff\xfe\x00{", OK, "POST", 400),
    ("body too large", b"{}", {**OK, "Content-Length": str(17 << 20)}, "POST", 413),
    ("length not a number", b"{}", {**OK, "Content-Length": "lots"}, "POST", 400),
    ("wrong method", b"", OK, "GET", 405),
]


@pytest.mark.parametrize(("case", "body", "headers", "method", "status"), WEBHOOK_CASES,
                         ids=[c[0] for c in WEBHOOK_CASES])
def test_webhook(case: str, body: bytes, headers: dict[str, str], method: str, status: int,
                 receiver: PullOnWebhook) -> None:
    assert _post(receiver.url, body, headers, method) == status
    assert receiver.received == 0 and receiver.pulls == 0  # nothing woke the worker: no pull, no write
    assert _post(receiver.url, b'{"action": "ANNOTATION_CREATED"}', OK) == 200  # and it still works
    assert receiver.idle.wait(timeout=30) and receiver.pulls == 1

