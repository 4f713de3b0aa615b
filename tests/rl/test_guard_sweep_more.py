"""Sweeps refuse what cannot work before anything is written: a malformed ``--address``, an address
whose service is not a Ray head (Ray would retry it for ever), a cluster Ray cannot join (the sweep folder
is written only once Ray is up), an env of the grid with no spec."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from equirl.cli import main
from tests.rl.test_guard_b_sweep import TINY, _one_line, _tree, _write


def _http1_server() -> tuple[int, threading.Event]:
    """A plain TCP service on 127.0.0.1 that answers like an HTTP/1 server (not gRPC)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(1024)
                    conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
                except OSError:
                    pass
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return int(srv.getsockname()[1]), stop


@pytest.mark.parametrize("address", ["not an address", "127.0.0.1:99999", ":6379", "host:port"])
def test_a_malformed_address_is_refused_before_anything_is_written(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "out"
    assert main(["sweep", str(_write(tmp_path, TINY)), "--out", str(out), "--address", address]) == 2
    assert "is not a Ray cluster address" in _one_line(capsys)
    assert not out.exists()


def test_a_service_that_is_not_ray_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init would retry for ever"))
    port, stop = _http1_server()
    out = tmp_path / "out"
    try:
        t0 = time.perf_counter()
        code = main(
            ["sweep", str(_write(tmp_path, TINY)), "--out", str(out), "--address", f"127.0.0.1:{port}"]
        )
        assert code == 2 and time.perf_counter() - t0 < 15
    finally:
        stop.set()
    assert "not as a Ray head" in _one_line(capsys)
    assert not out.exists()


def test_a_failed_cluster_connection_leaves_the_sweep_folder_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An earlier sweep's folder: a rerun with other settings whose cluster refuses the driver keeps the
    old ``sweep.json`` (the new one is written only once Ray is up)."""
    ray = pytest.importorskip("ray")
    import equirl.rl.sweep as sweep

    out = tmp_path / "out"
    assert main(["sweep", str(_write(tmp_path, TINY)), "--out", str(out), "--executor", "serial"]) == 0
    capsys.readouterr()
    before = _tree(out)

    def refuse(*a: Any, **k: Any) -> None:
        raise RuntimeError("Permission denied: the cluster requires a token")

    monkeypatch.setattr(sweep, "check_ray_address", lambda *a, **k: None)
    monkeypatch.setattr(ray, "init", refuse)
    changed = {**TINY, "timesteps": int(TINY.get("timesteps", 300)) + 50}
    code = main(
        ["sweep", str(_write(tmp_path, changed, "b.yaml")), "--out", str(out), "--address", "127.0.0.1:6379"]
    )
    assert code == 2 and "cannot connect to the Ray cluster" in _one_line(capsys)
    assert _tree(out) == before


@pytest.mark.parametrize("env", ["NoSuchEnv-v0", "mod:CartPole-v1"])
def test_an_env_without_spec_in_the_grid_is_refused_up_front(
    env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = {**TINY, "grid": {**dict(TINY.get("grid") or {}), "env": [env]}}
    out = tmp_path / "out"
    marker = tmp_path / "MARKER"
    (tmp_path / "mod.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    assert main(["sweep", str(_write(tmp_path, data)), "--out", str(out), "--executor", "serial"]) == 2
    assert env in _one_line(capsys)
    assert not out.exists() and not marker.exists()
