"""Weights from the hub (hf://) and from URLs, served by a loopback HTTP server (never the internet): downloaded
once and cached (a second call makes no request), pinned revisions, sha256 checks, and one error line for each
failure."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants as hub_constants
import numpy as np
import pytest
from test_cli import invoke
from hub_server import HubServer
from rich.console import Console

from mtl3dcli import fileio
from mtl3dcli.commands.predict import run_predict
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.sources import parse_hub, resolve_weights, split_digest

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = b"weights bytes " * 64
FILE = "weights/last.safetensors"


@pytest.fixture(scope="module")
def server(tiny_weights):
    """Repo me/model: main and v1 (another file), the tiny weights under FILE on main; /files/ plain URLs."""
    with HubServer() as hub:
        hub.repos["me/model"] = {"main": {FILE: tiny_weights.read_bytes(), "blob.bin": PAYLOAD},
                                 "v1": {"blob.bin": PAYLOAD[::-1]}}
        hub.files["blob.bin"] = PAYLOAD
        yield hub


@pytest.fixture
def caches(server, tmp_path, monkeypatch) -> Path:
    """Fresh hub and URL caches; the hub client pointed at the loopback server; no retry back-off."""
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("MTL3D_CACHE", str(tmp_path / "mtl3d"))
    monkeypatch.setattr("mtl3dcli.datasets.download.RETRY_DELAY_S", 0.0)
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda seconds: None)
    server.requests.clear()
    return tmp_path


def free_port_url() -> str:
    """A loopback URL nobody listens on: a connection is refused, as without a network."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_references_parse():
    assert parse_hub("hf://me/model/a/b.safetensors") == parse_hub("hf://me/model/a/b.safetensors")
    ref = parse_hub("hf://me/model@v1.0/a/b.onnx")
    assert (ref.repo, ref.revision, ref.path) == ("me/model", "v1.0", "a/b.onnx")
    assert split_digest("https://x/y.onnx#sha256=" + "AB" * 32) == ("https://x/y.onnx", "ab" * 32)
    assert resolve_weights("runs/x/weights/last.safetensors") == Path("runs/x/weights/last.safetensors")
    for bad in ("hf://me", "hf://me/model", "hf://me/model/"):
        with pytest.raises(Mtl3dError, match="hf://owner/repo\\[@revision\\]/path"):
            parse_hub(bad)
    with pytest.raises(Mtl3dError, match="#sha256=<64 hex digits>"):
        split_digest("https://x/y.onnx#md5=00")


def test_hub_file_is_downloaded_once_then_read_from_the_cache(server, caches):
    path = resolve_weights("hf://me/model/blob.bin")
    assert path.read_bytes() == PAYLOAD and str(path).startswith(str(caches / "hub"))
    assert server.requests, "the first call asks the hub"
    server.requests.clear()
    assert resolve_weights("hf://me/model/blob.bin") == path
    commit = server.commit("me/model", "main")
    assert resolve_weights(f"hf://me/model@{commit}/blob.bin").read_bytes() == PAYLOAD
    assert server.requests == [], "cached files make no request"


def test_hub_revision_is_honoured(server, caches):
    assert resolve_weights("hf://me/model@v1/blob.bin").read_bytes() == PAYLOAD[::-1]
    assert resolve_weights("hf://me/model/blob.bin").read_bytes() == PAYLOAD


def test_url_is_downloaded_once_and_checked(server, caches):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    path = resolve_weights(f"{server.url}/files/blob.bin#sha256={digest}")
    assert path.read_bytes() == PAYLOAD and path.name == "blob.bin"
    assert str(path).startswith(str(caches / "mtl3d" / "weights"))
    server.requests.clear()
    assert resolve_weights(f"{server.url}/files/blob.bin") == path
    assert resolve_weights(f"{server.url}/files/blob.bin#sha256={digest}") == path
    assert server.requests == []


@pytest.mark.parametrize("case", ["repo", "file", "revision", "hub_sha", "url_404", "url_sha", "hub_offline",
                                  "hub_no_network", "url_no_network"])
def test_each_failure_is_one_clear_error(case, server, caches, monkeypatch):
    wrong = "0" * 64
    cases = {
        "repo": ("hf://me/nothing/blob.bin", "no hub repository me/nothing"),
        "file": ("hf://me/model/absent.safetensors", "has no file absent.safetensors"),
        "revision": ("hf://me/model@v9/blob.bin", "has no revision 'v9'"),
        "hub_sha": (f"hf://me/model/blob.bin#sha256={wrong}", f"sha256 mismatch, expected {wrong}"),
        "url_404": (f"{server.url}/files/absent.bin", "HTTP 404"),
        "url_sha": (f"{server.url}/files/blob.bin#sha256={wrong}", "sha256 mismatch"),
        "hub_offline": ("hf://me/model/blob.bin", "not in the local hub cache, and HF_HUB_OFFLINE is set"),
        "hub_no_network": ("hf://me/model/blob.bin", "not in the local hub cache, and the hub at"),
        "url_no_network": (f"{free_port_url()}/files/blob.bin", "failed after 3 tries"),
    }
    reference, says = cases[case]
    if case == "hub_offline":
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    if case == "hub_no_network":
        monkeypatch.setenv("HF_ENDPOINT", free_port_url())
    with pytest.raises(Mtl3dError) as caught:
        resolve_weights(reference)
    message = str(caught.value)
    assert says in message and "\n" not in message
    assert not list((caches / "mtl3d").rglob("*.bin")), "a failed download leaves no file under its name"


def test_predict_reads_hub_weights(server, caches, tmp_path):
    image = tmp_path / "photo.png"
    fileio.write_image(image, np.full((32, 48, 3), 90, np.uint8))
    console = Console(file=io.StringIO())
    assert not run_predict([image], f"hf://me/model/{FILE}", out=tmp_path / "out", device="cpu", console=console)
    assert (tmp_path / "out" / "photo_depth.npy").is_file()


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtl3dcli", *args], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, **env, PYTHONPATH=str(REPO), NO_COLOR="1", COLUMNS="200"), timeout=300)


@pytest.mark.slow
def test_cli_with_hub_weights_then_offline_from_the_cache(server, tmp_path):
    """The real entry point: HF_ENDPOINT and HF_HUB_CACHE from the environment; a second run, with
    HF_HUB_OFFLINE=1, makes no request and gives the same predictions."""
    image = tmp_path / "photo.png"
    fileio.write_image(image, np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8))
    env = {"HF_ENDPOINT": server.url, "HF_HUB_CACHE": str(tmp_path / "hub"), "MTL3D_CACHE": str(tmp_path / "c")}
    server.requests.clear()
    first = _cli(["predict", str(image), "--weights", f"hf://me/model/{FILE}", "--out", "a", "--device", "cpu"],
                 env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert server.requests
    server.requests.clear()
    second = _cli(["predict", str(image), "--weights", f"hf://me/model/{FILE}", "--out", "b", "--device", "cpu"],
                  dict(env, HF_HUB_OFFLINE="1"), tmp_path)
    assert second.returncode == 0, second.stderr
    assert server.requests == []
    assert np.array_equal(np.load(tmp_path / "a" / "photo_depth.npy"), np.load(tmp_path / "b" / "photo_depth.npy"))


@pytest.mark.parametrize("command", ["predict", "evaluate", "export", "render-views"])
def test_every_command_resolves_its_weights(command, server, caches, tmp_path, capsys):
    """A 404 URL fails each command with the resolver's one line: they all take --weights through it."""
    image = tmp_path / "photo.png"
    fileio.write_image(image, np.full((20, 30, 3), 128, np.uint8))
    url = f"{server.url}/files/absent.safetensors"
    args = {"predict": ["predict", image, "--weights", url], "evaluate": ["evaluate", "--weights", url],
            "export": ["export", "--weights", url, "--out", tmp_path / "m.onnx"],
            "render-views": ["render-views", image, "--weights", url]}[command]
    code, _, err = invoke(args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "HTTP 404" in lines[0], err
