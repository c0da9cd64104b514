"""Download, resume, verification, safe extraction and conversion against a loopback HTTP server."""

from __future__ import annotations

import hashlib
import threading
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from mtl3dcli.datasets import download, registry
from mtl3dcli.datasets.convert import NYU40_CLASSES, PART_CLASSES, VOC_CLASSES, nyu_intrinsics
from mtl3dcli.data.layout import DatasetLayout
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.tasks import TASKS

from archives import (PASCAL_SPLITS, PLANE_NORMAL, build_malicious_archive, build_nyud_archive,
                      build_pascal_archive, nyu_K)


class Server:
    """Serves `files` by URL path; honours Range unless `ignore_range`; `cut_after` bytes drops the connection."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_after: int | None = None
        self.cuts_left = 0
        self.ignore_range = False
        self.requests: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append({"path": self.path, **{k: v for k, v in self.headers.items()}})
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                header = self.headers.get("Range")
                if header and not server.ignore_range:
                    start = int(header.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.cut_after is not None and server.cuts_left > 0:
                    server.cuts_left -= 1
                    body = body[:server.cut_after]
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)
    for var in ("MTL3D_NYUV2_URL", "MTL3D_PASCAL_URL", download.MIRROR_ENV):
        monkeypatch.delenv(var, raising=False)


def serve_source(server, monkeypatch, name, archive: Path, **digest):
    """Point the registry's source of `name` at the loopback copy of `archive`, with the given digests (default: the
    true sha256)."""
    data = archive.read_bytes()
    server.files[f"/{archive.name}"] = data
    digest = digest or {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    set_source(monkeypatch, name, urls=(f"{server.base}/{archive.name}",),
               **{"size": None, "sha256": None, "md5": None, **digest})
    return data


def set_source(monkeypatch, name, **changes):
    spec = registry.DATASETS[name]
    monkeypatch.setitem(registry.DATASETS, name, replace(spec, source=replace(spec.source, **changes)))


def test_nyuv2_download_and_convert(tmp_path, server, monkeypatch):
    serve_source(server, monkeypatch, "nyuv2", build_nyud_archive(tmp_path / "NYUD_MT.tgz"))
    out = registry.prepare_dataset("nyuv2", tmp_path / "data" / "nyuv2")
    layout = DatasetLayout(out)
    assert layout.meta.name == "nyuv2" and layout.meta.edge_max_dist == 0.011
    assert layout.meta.classes["semseg"] == NYU40_CLASSES and len(NYU40_CLASSES) == 40
    assert layout.ids("train") == ["0001", "0002"] and layout.ids("val") == ["0003"]
    assert [t.name for t in layout.available_tasks()] == ["semseg", "depth", "normals", "edge"]
    seg = TASKS["semseg"].read(layout.label_path(TASKS["semseg"], "0002"))
    assert seg[5, 0] == 255 and seg[5, 10] == 4 and seg[5, 25] == 39  # 0 -> 255, 5 -> 4, 40 -> 39
    assert seg[0, 0] == 1  # row 0 holds upstream label 1 + index = 2 -> train id 1
    edge = TASKS["edge"].read(layout.label_path(TASKS["edge"], "0001"))
    assert edge[:, 7:9].min() == 1.0 and edge.sum() == 2 * edge.shape[0]
    # Upstream normals were stored as (x, -y, -z); the converter measures that against depth and undoes it.
    normals = TASKS["normals"].read(layout.label_path(TASKS["normals"], "0001"))
    assert np.allclose(normals[10, 10], PLANE_NORMAL, atol=0.02)
    assert layout.meta.extra["normals_axis_map"] == [[1, 0, 0], [0, -1, 0], [0, 0, -1]]
    camera = layout.cameras["0003"]
    assert np.allclose(camera.K, nyu_K()) and np.allclose(camera.K, nyu_intrinsics(24, 32))
    assert camera.K[0, 0] == pytest.approx(518.8579 * 32 / 640) and camera.scene == "0003"
    assert np.array_equal(camera.pose, np.eye(4))
    assert not (tmp_path / "data" / ".downloads").exists()  # archive removed, empty cache removed
    assert not list((tmp_path / "data").glob(".*"))  # no extraction or partial folders left


def test_pascal_download_and_convert(tmp_path, server, monkeypatch):
    serve_source(server, monkeypatch, "pascal-context", build_pascal_archive(tmp_path / "PASCAL_MT.tgz"))
    out = registry.prepare_dataset("pascal-context", tmp_path / "pascal", keep_archive=True)
    layout = DatasetLayout(out)
    assert layout.meta.classes["semseg"] == VOC_CLASSES and layout.meta.classes["parts"] == PART_CLASSES
    assert layout.meta.edge_max_dist == 0.0075 and not layout.has_cameras
    assert layout.ids("train") == PASCAL_SPLITS["train"]
    first, second = PASCAL_SPLITS["train"]
    parts = TASKS["parts"].read(layout.label_path(TASKS["parts"], first))
    assert parts[2, 5] == 1 and parts[20, 5] == 6 and parts[10, 5] == 0 and parts[10, 20] == 0  # head, lfoot, bg
    assert (TASKS["parts"].read(layout.label_path(TASKS["parts"], second)) == 255).all()  # no person parts
    seg = TASKS["semseg"].read(layout.label_path(TASKS["semseg"], first))
    assert seg[0, 0] == 255 and seg[5, 5] == 15 and seg[5, 20] == 0
    sal = TASKS["saliency"].read(layout.label_path(TASKS["saliency"], first))
    assert sal[:, :10].min() == 1.0 and sal[:, 10:].max() == 0.0  # 200/255 > 0.5, 50/255 < 0.5
    normals = TASKS["normals"].read(layout.label_path(TASKS["normals"], first))
    assert normals[5, 5, 2] == pytest.approx(-1.0, abs=1e-3) and not normals[:, 16:].any()  # sky (360) dropped
    edge = TASKS["edge"].read(layout.label_path(TASKS["edge"], first))
    assert edge[:, 15].min() == 1.0 and edge.sum() == 24  # one-pixel line where 284 meets 360
    assert (tmp_path / ".downloads" / "PASCAL_MT.tgz").is_file()  # --keep-archive


def test_resume_after_cut_connection(tmp_path, server, monkeypatch):
    archive = build_nyud_archive(tmp_path / "NYUD_MT.tgz")
    data = serve_source(server, monkeypatch, "nyuv2", archive)
    server.cut_after, server.cuts_left = 1000, 1
    dest = tmp_path / "cache" / "NYUD_MT.tgz"
    url = f"{server.base}/NYUD_MT.tgz"
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(Mtl3dError, match="run again to resume"):
        download.download_file(url, dest, expected_size=len(data), sha256=sha, retries=0)
    part = dest.with_name("NYUD_MT.tgz.part")
    assert part.stat().st_size == 1000 and not dest.exists()
    calls = []

    @contextmanager
    def bar(label):
        yield lambda done, total: calls.append((label, done, total))

    download.download_file(url, dest, expected_size=len(data), sha256=sha, progress=bar)
    assert server.requests[-1]["Range"] == "bytes=1000-"
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha and not part.exists()
    assert calls[0] == ("download NYUD_MT.tgz", 1000, len(data))  # the bar starts at the resumed offset
    assert calls[-1] == ("download NYUD_MT.tgz", len(data), len(data))


def test_retry_within_one_call_and_server_ignoring_range(tmp_path, server, monkeypatch):
    data = serve_source(server, monkeypatch, "nyuv2", build_nyud_archive(tmp_path / "NYUD_MT.tgz"))
    server.cut_after, server.cuts_left, server.ignore_range = 700, 2, True
    dest = download.download_file(f"{server.base}/NYUD_MT.tgz", tmp_path / "c" / "a.tgz", expected_size=len(data))
    assert dest.read_bytes() == data and len(server.requests) == 3
    assert server.requests[1]["Range"] == "bytes=700-"  # asked to resume; the server restarted from 0


def test_bad_checksum_leaves_nothing(tmp_path, server, monkeypatch):
    archive = build_nyud_archive(tmp_path / "NYUD_MT.tgz")
    serve_source(server, monkeypatch, "nyuv2", archive, sha256="0" * 64)
    out = tmp_path / "data" / "nyuv2"
    actual = hashlib.sha256(archive.read_bytes()).hexdigest()
    with pytest.raises(Mtl3dError, match=f"sha256 mismatch, expected {'0' * 64}, got {actual}"):
        registry.prepare_dataset("nyuv2", out)
    assert not out.exists()
    assert not list((tmp_path / "data").rglob("*.part")) and not list((tmp_path / "data").rglob("*.tgz"))


def test_env_mirror_override(tmp_path, server, monkeypatch):
    data = serve_source(server, monkeypatch, "nyuv2", build_nyud_archive(tmp_path / "NYUD_MT.tgz"))
    server.files["/mirror/NYUD_MT.tgz"] = data
    set_source(monkeypatch, "nyuv2", urls=(f"{server.base}/missing.tgz",))
    monkeypatch.setenv("MTL3D_NYUV2_URL", f"{server.base}/mirror/NYUD_MT.tgz")
    log = []
    registry.prepare_dataset("nyuv2", tmp_path / "a", log=log.append)
    assert server.requests[0]["path"] == "/mirror/NYUD_MT.tgz" and len(server.requests) == 1
    monkeypatch.delenv("MTL3D_NYUV2_URL")
    monkeypatch.setenv(download.MIRROR_ENV, f"{server.base}/mirror/")
    registry.prepare_dataset("nyuv2", tmp_path / "b")
    assert server.requests[1]["path"] == "/mirror/NYUD_MT.tgz"


def test_mirror_fallback_and_unpinned_url_logs_sha(tmp_path, server, monkeypatch):
    data = serve_source(server, monkeypatch, "nyuv2", build_nyud_archive(tmp_path / "NYUD_MT.tgz"))
    set_source(monkeypatch, "nyuv2", urls=(f"{server.base}/gone.tgz", *registry.DATASETS["nyuv2"].source.urls))
    log = []
    registry.prepare_dataset("nyuv2", tmp_path / "a", log=log.append)
    assert [r["path"] for r in server.requests] == ["/gone.tgz", "/NYUD_MT.tgz"]
    registry.prepare_dataset("nyuv2", tmp_path / "b", url=f"{server.base}/NYUD_MT.tgz", log=log.append)
    assert any(hashlib.sha256(data).hexdigest() in line for line in log)
    assert DatasetLayout(tmp_path / "b").meta.extra["sha256"] == hashlib.sha256(data).hexdigest()


def test_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "nyuv2").mkdir()
    with pytest.raises(Mtl3dError, match="--overwrite"):
        registry.prepare_dataset("nyuv2", tmp_path / "nyuv2")
    with pytest.raises(Mtl3dError, match="unknown dataset"):
        registry.prepare_dataset("imagenet", tmp_path / "x")


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_safe_extract_refuses_malicious_members(tmp_path, kind):
    archive = build_malicious_archive(tmp_path / "evil.tgz", kind)
    target = tmp_path / "sub" / "out"
    with pytest.raises(Mtl3dError, match="refusing") as info:
        download.safe_extract(archive, target)
    assert {"dotdot": "../evil", "absolute": "/tmp/mtl3d-absolute-evil", "symlink": "NYUD_MT/link"}[kind] \
        in str(info.value)
    assert not target.exists() and list((tmp_path / "sub").iterdir()) == []
    assert not (tmp_path / "evil").exists() and not Path("/tmp/mtl3d-absolute-evil").exists()


def test_malicious_archive_through_download_dataset(tmp_path, server, monkeypatch):
    serve_source(server, monkeypatch, "nyuv2", build_malicious_archive(tmp_path / "NYUD_MT.tgz", "dotdot"))
    with pytest.raises(Mtl3dError, match="refusing unsafe member '../evil'"):
        registry.prepare_dataset("nyuv2", tmp_path / "data" / "nyuv2")
    assert not (tmp_path / "data" / "nyuv2").exists() and not (tmp_path / "data" / "evil").exists()
    assert not list((tmp_path / "data" / ".downloads").glob(".*extract*"))


def test_html_page_is_refused(tmp_path, server):
    server.files["/page"] = b"<html>quota exceeded</html>"
    # A server that answers with a web page (e.g. Google Drive's quota page) must not be saved as the archive.
    original = server.httpd.RequestHandlerClass.send_header

    def send_header(self, key, value):
        original(self, key, "text/html; charset=utf-8" if key == "Content-Type" else value)

    server.httpd.RequestHandlerClass.send_header = send_header
    with pytest.raises(Mtl3dError, match="web page"):
        download.download_file(f"{server.base}/page", tmp_path / "x.tgz")
    assert not (tmp_path / "x.tgz").exists()
