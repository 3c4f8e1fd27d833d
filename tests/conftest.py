"""Shared pytest fixtures."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hvc.data.demo import build_demo
from hvc.config.params import load_params
from workflow_copy import copy_workflow

# ../shared/data/davis2016-sample relative to the repository root (tests/..)
DAVIS2016_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared/data/davis2016-sample"


@pytest.fixture(scope="session")
def davis2016_sample() -> Path:
    """The real DAVIS 2016 sample (6 val sequences with masks); skips the test when absent."""
    if not DAVIS2016_SAMPLE.is_dir():
        pytest.skip(f"real-data test skipped: the DAVIS 2016 sample folder {DAVIS2016_SAMPLE} is absent")
    return DAVIS2016_SAMPLE


@pytest.fixture(scope="session")
def davis_compare():
    """The module ``benchmarks/davis2016_compare.py`` (every method on the DAVIS 2016 sample:
    shards, parameters at an equal budget, training through the harness, J&F per inference
    path), loaded from its file for the tests that reuse it."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "davis2016_compare.py"
    spec = importlib.util.spec_from_file_location("davis2016_compare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The tiny demo (params.yaml + tests/configs/tiny.yaml: 2 sequences of 6 frames, 24
    training images), built once per test run; copy before changing it."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("demo") / "demo"
    build_demo(load_params([root / "params.yaml", root / "tests" / "configs" / "tiny.yaml"]).demo, out)
    return out


@pytest.fixture
def bench(demo_dir, tmp_path) -> Path:
    """A private copy of the demo benchmark (DAVIS 2017 layout) to damage."""
    return Path(shutil.copytree(demo_dir / "benchmark", tmp_path / "benchmark"))


@pytest.fixture
def loopback_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[type[BaseHTTPRequestHandler]], ThreadingHTTPServer]]:
    """Start HTTP servers on 127.0.0.1 for a test: ``loopback_server(handler)`` returns a
    running :class:`ThreadingHTTPServer` on a free port (``server_address[1]``), shut down
    at teardown. Proxy variables are cleared so requests to it never go through a proxy."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    servers: list[ThreadingHTTPServer] = []

    def start(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(httpd)
        return httpd

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def workflow_workspace(tmp_path: Path) -> Callable[..., Path]:
    """``make(*configs)``: the workflow (Snakefile, params.yaml, workflow/) copied to
    ``tmp_path/ws``, with each named file of tests/configs/ (default: tiny.yaml) beside it
    under the same relative path; returns ``tmp_path/ws``."""

    def make(*configs: str) -> Path:
        return copy_workflow(tmp_path / "ws", configs or ("tiny.yaml",))

    return make
