"""Dashboards as code: valid Grafana JSON, unique uids, a query on every panel, committed copies in sync with the
code, and `seedr1 dashboards push` against a loopback stand-in for Grafana's HTTP API."""
import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from seedr1.metrics.dashboards import build_dashboards, queried_metrics

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "k8s" / "charts" / "seedr1" / "dashboards"


@pytest.fixture(scope="module")
def dashboards():
    return build_dashboards()


def test_dashboards_are_valid_with_unique_uids_and_a_query_per_panel(dashboards):
    uids = [d["uid"] for d in dashboards.values()]
    assert len(uids) == len(set(uids)) and all(uids)
    assert {"seedr1-grpo.json", "seedr1-sft.json", "seedr1-data.json", "seedr1-evaluation.json",
            "seedr1-serving.json", "ray-default.json", "ray-train.json", "ray-serve.json", "ray-data.json"} <= set(dashboards)
    for name, dash in dashboards.items():
        json.loads(json.dumps(dash))
        assert dash["title"] and isinstance(dash["panels"], list) and dash["panels"], name
        panels = [p for top in dash["panels"] for p in [top, *top.get("panels", [])]]
        ids = [p["id"] for p in panels if "id" in p]
        assert len(ids) == len(set(ids)), name
        for p in panels:
            if p["type"] in ("row", "text"):
                continue
            exprs = [t.get("expr") for t in p.get("targets", [])]
            assert exprs and all(exprs), f"{name}: panel {p.get('title')!r} has no query"
    ours = [d for d in dashboards.values() if d["uid"].startswith("seedr1-")]
    for dash in ours:  # every panel of ours has a help text and a place on the grid
        for p in dash["panels"]:
            assert set(p["gridPos"]) == {"h", "w", "x", "y"}
            assert p["type"] == "row" or p["description"], p["title"]
    grpo = queried_metrics(dashboards["seedr1-grpo.json"])
    assert {"ray_seedr1_grpo_kl", "ray_seedr1_grpo_seconds_sync", "ray_seedr1_grpo_events_total"} <= grpo


def test_committed_copies_match_the_code(dashboards):
    """k8s/charts/seedr1/dashboards is what `seedr1 dashboards build` writes: regenerate it when this fails."""
    committed = {p.name: json.loads(p.read_text()) for p in COMMITTED.glob("*.json")}
    assert sorted(committed) == sorted(dashboards), "run: seedr1 dashboards build"
    for name, dash in dashboards.items():
        assert committed[name] == json.loads(json.dumps(dash)), f"{name} drifted; run: seedr1 dashboards build"


class FakeGrafana(BaseHTTPRequestHandler):
    """The few Grafana endpoints `push` uses; records every request."""

    requests: list = []
    folders: list = []
    dashboards: dict = {}
    status = 200

    def _reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body=None):
        FakeGrafana.requests.append({"method": self.command, "path": self.path,
                                     "auth": self.headers.get("Authorization"), "body": body})

    def do_GET(self):
        self._record()
        if FakeGrafana.status != 200:
            return self._reply(FakeGrafana.status, {"message": "Unauthorized"})
        if self.path.split("?")[0] == "/api/folders":
            return self._reply(200, FakeGrafana.folders)
        self._reply(404, {"message": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._record(body)
        if FakeGrafana.status != 200:
            return self._reply(FakeGrafana.status, {"message": "Unauthorized"})
        if self.path == "/api/folders":
            folder = {"id": len(FakeGrafana.folders) + 1, "uid": f"f{len(FakeGrafana.folders) + 1}",
                      "title": body["title"]}
            FakeGrafana.folders.append(folder)
            return self._reply(200, folder)
        if self.path == "/api/dashboards/db":
            uid = body["dashboard"]["uid"]
            if uid in FakeGrafana.dashboards and not body.get("overwrite"):
                return self._reply(412, {"message": "version-mismatch"})
            FakeGrafana.dashboards[uid] = body
            return self._reply(200, {"status": "success", "uid": uid})
        self._reply(404, {"message": "not found"})

    def log_message(self, *args):
        pass


@pytest.fixture()
def grafana():
    FakeGrafana.requests, FakeGrafana.folders, FakeGrafana.dashboards, FakeGrafana.status = [], [], {}, 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGrafana)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_push_creates_the_folder_once_and_overwrites_by_uid(grafana, dashboards):
    from seedr1.cli import main

    assert main(["dashboards", "push", "--url", grafana, "--token", "glsa_abc", "--no-ray"]) == 0
    ours = {d["uid"] for d in dashboards.values() if d["uid"].startswith("seedr1-")}
    assert set(FakeGrafana.dashboards) == ours
    assert all(r["auth"] == "Bearer glsa_abc" for r in FakeGrafana.requests)
    posts = [r for r in FakeGrafana.requests if r["path"] == "/api/dashboards/db"]
    assert all(r["body"]["overwrite"] is True and r["body"]["folderUid"] == "f1" and r["body"]["dashboard"]["id"]
               is None for r in posts)
    assert main(["dashboards", "push", "--url", grafana, "--basic-auth", "admin:pw", "--no-ray"]) == 0
    assert len(FakeGrafana.folders) == 1  # found by title the second time, not created again
    assert FakeGrafana.requests[-1]["auth"] == "Basic " + base64.b64encode(b"admin:pw").decode()
    assert len([r for r in FakeGrafana.requests if r["path"] == "/api/dashboards/db"]) == 2 * len(ours)


def test_push_errors_are_clear(grafana, capsys):
    from seedr1.cli import main

    FakeGrafana.status = 401
    assert main(["dashboards", "push", "--url", grafana, "--token", "wrong", "--no-ray"]) == 1
    assert "401" in capsys.readouterr().err
    FakeGrafana.status = 200
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["dashboards", "push", "--url", f"http://127.0.0.1:{port}", "--no-ray"]) == 1
    assert "cannot reach Grafana" in capsys.readouterr().err
