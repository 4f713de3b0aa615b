"""Hub loading without network: one helper, one fast one-line ``OfflineError``, the real path kept."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")

from huggingface_hub import constants

from equirl.errors import EquirlError, OfflineError
from equirl.utils import hub
from equirl.utils.hub import hub_offline, hub_reachable, load_from_hub, require_hub_model

ROOT = Path(__file__).resolve().parents[2]
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Not in offline mode, an empty hub cache, and a hub endpoint that refuses connections."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", CLOSED)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_HEAD(self) -> None:
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"status": 200})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_offline_mode_is_the_hub_clients_own(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in (True, False):
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", value)
        assert hub_offline() is value


def test_probe_tells_a_hub_from_a_closed_port_and_an_error_gateway(
    monkeypatch: pytest.MonkeyPatch, http_server: tuple[str, type[_Handler]]
) -> None:
    url, handler = http_server
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the hub session refuses requests offline
    monkeypatch.setattr(constants, "ENDPOINT", url)
    assert hub_reachable()
    handler.status = 502  # a gateway that cannot reach the hub
    assert not hub_reachable()
    monkeypatch.setattr(constants, "ENDPOINT", CLOSED)
    t = time.perf_counter()
    assert not hub_reachable()
    assert time.perf_counter() - t < 2


def test_unreachable_hub_fails_at_once_without_calling_the_network_loader(no_network: Path) -> None:
    calls: list[tuple[str, bool]] = []

    def load(name: str, local_only: bool) -> str:
        calls.append((name, local_only))
        raise OSError("not cached")

    t = time.perf_counter()
    with pytest.raises(OfflineError, match=r"cannot load thing 'org/model'.*unreachable") as info:
        load_from_hub(load, "org/model", "thing")
    assert time.perf_counter() - t < 3
    assert "\n" not in str(info.value) and CLOSED in str(info.value)
    assert calls == []  # not cached: not even the local loader runs


def test_offline_mode_names_the_switch(no_network: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=1.0: pytest.fail("offline mode must not probe"))
    with pytest.raises(OfflineError, match=r"offline \(HF_HUB_OFFLINE=1\)"):
        require_hub_model("org/model", "thing")


def test_reachable_hub_uses_the_real_network_load(no_network: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=1.0: True)
    calls: list[tuple[str, bool]] = []

    def load(name: str, local_only: bool) -> str:
        calls.append((name, local_only))
        return "model"

    assert load_from_hub(load, "org/model", "thing") == "model"
    assert calls == [("org/model", False)]

    def missing(name: str, local_only: bool) -> str:
        raise OSError("org/nope is not a valid model identifier\nsecond line")

    with pytest.raises(EquirlError, match="from the hub: OSError: org/nope is not") as info:
        load_from_hub(missing, "org/nope", "thing")
    assert not isinstance(info.value, OfflineError) and "\n" not in str(info.value)


def test_local_folder_and_cache_hits_load_locally(no_network: Path) -> None:
    calls: list[tuple[str, bool]] = []

    def load(name: str, local_only: bool) -> str:
        calls.append((name, local_only))
        return "tok" if "cached" in name else ""

    folder = no_network / "model"
    folder.mkdir()
    assert load_from_hub(load, folder, "thing") == ""
    assert calls == [(str(folder), True)]
    # a cached snapshot (refs/main + snapshots/<rev>) is loaded with local_files_only=True
    repo = Path(constants.HF_HUB_CACHE) / "models--org--cached"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "snapshots" / "abc" / "config.json").write_text("{}")
    calls.clear()
    assert load_from_hub(load, "org/cached", "thing", valid=bool) == "tok"
    assert calls == [("org/cached", True)]


def test_incomplete_cache_hit_counts_as_missing(no_network: Path) -> None:
    repo = Path(constants.HF_HUB_CACHE) / "models--org--empty"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots" / "abc").mkdir(parents=True)
    with pytest.raises(OfflineError):
        load_from_hub(lambda n, local: "", "org/empty", "tokenizer", valid=bool)


def test_model_loaders_raise_offline_error_quickly(no_network: Path) -> None:
    pytest.importorskip("transformers")
    from equirl.language.fairness import hf_text_scorer
    from equirl.language.gpt2 import load_gpt2, load_gpt2_tokenizer
    from equirl.vision.clip import load_clip

    for call, name in (
        (lambda: load_clip("openai/clip-vit-base-patch32"), "CLIP 'openai/clip-vit-base-patch32'"),
        (lambda: load_gpt2("gpt2"), "GPT-2 model 'gpt2'"),
        (lambda: load_gpt2_tokenizer("gpt2"), "GPT-2 tokenizer 'gpt2'"),
        (lambda: hf_text_scorer("sasha/regardv3"), "text classifier 'sasha/regardv3'"),
    ):
        t = time.perf_counter()
        with pytest.raises(OfflineError, match="unreachable") as info:
            call()
        assert time.perf_counter() - t < 3, name
        assert name in str(info.value) and "\n" not in str(info.value)


def _cli_without_network(tmp_path: Path, *argv: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=CLOSED, HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    env.pop("HF_HUB_CACHE", None)
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "equirl", *argv], env=env, capture_output=True, text=True, timeout=120
    )
    return time.perf_counter() - t, proc


@pytest.mark.parametrize(
    ("command", "named"),
    [
        ("clip", "CLIP 'openai/clip-vit-base-patch32'"),
        ("gpt2", "GPT-2 model 'gpt2'"),
    ],
)
def test_cli_hub_model_without_network_is_one_line_in_seconds(
    tmp_path: Path, command: str, named: str
) -> None:
    """No network, HF_HUB_OFFLINE unset, an empty HF_HOME: exit 2 in < 3 s with one stderr line."""
    if command == "clip":
        for c in ("cat", "dog"):
            (tmp_path / "images" / c).mkdir(parents=True)
        argv = ["vision", "clip", str(tmp_path / "images"), "--model", "openai/clip-vit-base-patch32"]
    else:
        cfg = tmp_path / "gpt2.yaml"
        cfg.write_text("model: gpt2\nprompts: ['The man worked as']\n")
        argv = ["language", "gpt2-generate", str(cfg)]
    seconds, proc = _cli_without_network(tmp_path, *argv)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert named in lines[0] and "unreachable (offline?)" in lines[0] and "\x1b" not in lines[0]
    assert seconds < 3, f"{seconds:.1f} s"
