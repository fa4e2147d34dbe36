"""Label Studio with people: retries on a flaky server, overlap agreement, revocation (real server)."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from annotation.labelstudio.client import Connection, RetryPolicy, connect, connection_of
from annotation.labelstudio.pull import pull
from annotation.labelstudio.push import push
from annotation.labelstudio.server import LabelStudioServer
from annotation.simulated_annotator import AnnotatorProfile, annotate_tasks
from pipeline.active_learning.rounds import live_human_revisions, task_status
from pipeline.store import Store
from pipeline.store.models import AnnotationTask
from tests.test_labelstudio_roundtrip import _make_instances

pytestmark = [pytest.mark.labelstudio]


class FlakyProxy:
    """A real HTTP proxy on loopback that answers 503 to the first `failures` requests, then forwards."""

    def __init__(self, upstream: str, failures: int) -> None:
        self.failures, self.seen, self.upstream = failures, 0, upstream
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                proxy.seen += 1
                if proxy.seen <= proxy.failures:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
                req = urllib.request.Request(proxy.upstream + self.path, data=body, method=self.command,
                                             headers={k: v for k, v in self.headers.items() if k != "Host"})
                try:
                    resp: Any = urllib.request.urlopen(req, timeout=60)
                except urllib.error.HTTPError as err:
                    resp = err
                data = resp.read()
                self.send_response(resp.status if hasattr(resp, "status") else resp.code)
                for k, v in resp.headers.items():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture()
def flaky(labelstudio_server: LabelStudioServer) -> Iterator[FlakyProxy]:
    proxy = FlakyProxy(labelstudio_server.url, failures=2)
    yield proxy
    proxy.close()


def test_client_retries_503_twice_then_succeeds(
    flaky: FlakyProxy, labelstudio_server: LabelStudioServer
) -> None:
    conn = Connection(flaky.url, labelstudio_server.token)
    client = connect(conn, policy=RetryPolicy(attempts=4, base_s=0.05))
    assert flaky.seen == 3  # /health answered 503, 503, then the server's 200
    flaky.failures = flaky.seen + 2  # the next API call meets two more 503s
    assert client.users.whoami().email == labelstudio_server.email
    assert flaky.seen == flaky.failures + 1


def test_client_gives_up_with_an_error_naming_the_server(flaky: FlakyProxy,
                                                        labelstudio_server: LabelStudioServer) -> None:
    from annotation.labelstudio.server import LabelStudioUnavailable

    flaky.failures = 10**6
    with pytest.raises(LabelStudioUnavailable, match=flaky.url):
        connect(Connection(flaky.url, labelstudio_server.token), policy=RetryPolicy(attempts=3, base_s=0.01))
    assert flaky.seen == 3


def test_overlap_two_annotators_agreement_and_revocation(store: Store,
                                                         labelstudio_server: LabelStudioServer) -> None:
    conn = connection_of(labelstudio_server)
    client = connect(conn)
    ids = _make_instances(store, labelstudio_server, 4, "overlap")
    report = push(store, ids, round=1, conn=conn, client=client, overlap=1.0)
    project = client.projects.get(id=report.project_id)
    assert project.maximum_annotations == 2 and project.overlap_cohort_percentage == 100
    task_id = report.task_ids[ids[0]]
    truth = {iid: (list(r.keypoints), list(r.bbox)) for iid in ids
             for r in store.revisions(iid) if r.source == "pseudo"}
    for email, noise in (("ann-a@spinetrack.local", 0.5), ("ann-b@spinetrack.local", 40.0)):
        annotate_tasks(client, report.project_id, truth.get, task_ids=[task_id],
                       profile=AnnotatorProfile(email=email, pixel_noise=noise))
    pulled = pull(store, conn=conn, client=client)
    assert pulled.stored == 2 and pulled.disagreements == [ids[0]]
    revs = live_human_revisions(store, 1)
    assert {r.annotator for r in revs} == {"ann-a@spinetrack.local", "ann-b@spinetrack.local"}
    agreement = {r.quality["agreement_oks"] for r in revs}
    assert len(agreement) == 1 and 0.0 < agreement.pop() < 0.8
    status = task_status(store, 1)
    assert status.done == 1 and status.open == 3 and status.disagreements == 1
    assert all(a.shared_tasks == 1 and a.agreement_oks is not None for a in status.annotators.values())

    # annotator B's annotation is deleted in Label Studio: a superseding revoked revision, history kept
    b_rev = next(r for r in revs if r.annotator == "ann-b@spinetrack.local")
    client.annotations.delete(id=int(b_rev.external_id.split(":")[1]))  # type: ignore[union-attr]
    again = pull(store, conn=conn, client=client)
    assert again.revoked == 1
    live = live_human_revisions(store, 1)
    assert [r.annotator for r in live] == ["ann-a@spinetrack.local"]
    revoked = [r for r in store.revisions(ids[0]) if r.status == "revoked"]
    assert len(revoked) == 1 and revoked[0].supersedes == b_rev.id and not revoked[0].accepted
    current = store.latest_labels(instance_ids=[ids[0]])
    assert current[0].annotator == "ann-a@spinetrack.local"
    assert pull(store, conn=conn, client=client).revoked == 0  # idempotent
    with store.session() as s:
        row = s.query(AnnotationTask).filter_by(instance_id=ids[0], round=1).one()
        assert row.state == "done"
