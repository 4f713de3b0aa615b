"""A missing optional dependency is one line naming the extra that installs it (read from equirl's own
package metadata, so the table cannot drift from pyproject.toml)."""

from __future__ import annotations

import builtins
from typing import Any

import pytest

from equirl.cli import last_resort_message, main, missing_extra


@pytest.mark.parametrize(
    "module, extra",
    [("ray", "dist"), ("ray.tune", "dist"), ("stable_baselines3", "rl"), ("cv2", "rl"), ("PIL", "vision")],
)
def test_the_extra_comes_from_the_package_metadata(module: str, extra: str) -> None:
    assert missing_extra(module) == extra


def test_an_unknown_or_internal_module_is_not_dressed_up() -> None:
    assert missing_extra("nosuchpackage") is None
    assert last_resort_message(ModuleNotFoundError("x", name="equirl.nosuch")) is None


def test_sweep_without_ray_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    real = builtins.__import__

    def no_ray(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *args, **kwargs)

    import importlib.util

    real_find = importlib.util.find_spec
    monkeypatch.setattr(builtins, "__import__", no_ray)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n.split(".")[0] == "ray" else real_find(n, *a)
    )
    monkeypatch.chdir(tmp_path)
    code = main(["sweep", "smoke", "--out", str(tmp_path / "sw")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "pip install 'equirl[dist]'" in err and "--executor serial" in err
