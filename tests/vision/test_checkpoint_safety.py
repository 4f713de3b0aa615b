"""Vision checkpoints are read as weights only: a pickled payload is refused and never run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from equirl.cli import main
from equirl.errors import CheckpointError
from equirl.vision import SmallCNN, load_cnn, save_cnn
from tests.helpers import Payload


def _crafted(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    model = SmallCNN(image_size=8, width=4, hidden=8)
    blob = {
        "format": "x",
        "hparams": model.hparams,
        "state_dict": model.state_dict(),
        "meta": Payload(marker),
    }
    path = tmp_path / "cnn.pt"
    torch.save(blob, path)
    return path, marker


def test_round_trip_still_loads(tmp_path: Path) -> None:
    model = SmallCNN(image_size=8, width=4, hidden=8)
    save_cnn(model, tmp_path / "ok.pt", meta={"group": "C4", "acc": [0.5]})
    loaded, meta = load_cnn(tmp_path / "ok.pt")
    assert meta == {"group": "C4", "acc": [0.5]}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_pickled_payload_is_refused(tmp_path: Path) -> None:
    path, marker = _crafted(tmp_path)
    with pytest.raises(CheckpointError) as err:
        load_cnn(path)
    assert "\n" not in str(err.value) and "pickled Python objects" in str(err.value)
    assert not marker.exists()


def test_cli_eval_refuses_payload(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, marker = _crafted(tmp_path)
    assert main(["vision", "eval", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pickled Python objects" in err, err
    assert not marker.exists()


def _saved(tmp_path: Path, method: str = "base", **edit: object) -> Path:
    """A small CNN saved as ``vision finetune`` would, for ``method``, with meta entries replaced."""
    from equirl.vision.train import build_classifier

    torch.manual_seed(0)
    net = SmallCNN(image_size=8, width=4, hidden=8)
    model = build_classifier(net, method, "rot90") if method != "base" else net
    meta: dict[str, object] = {"method": method, "group": "rot90"}
    if method == "lambda":
        model(torch.zeros(1, 1, 8, 8))
        meta["lambda_state"] = model.lambda_net.state_dict()  # type: ignore[union-attr]
    if method == "canonicalize":
        model(torch.zeros(1, 1, 8, 8))
        meta["scorer_state"] = model.scorer.state_dict()  # type: ignore[union-attr]
    meta.update(edit)
    path = tmp_path / f"{method}.pt"
    save_cnn(net, path, meta)
    return path


@pytest.mark.parametrize(
    ("method", "key", "value", "match"),
    [
        ("lambda", "lambda_state", "not weights", r"λ weights \(meta.lambda_state\).*str, not a state dict"),
        ("lambda", "lambda_state", {"params": "x"}, r"meta.lambda_state.*'params' is a str, not a tensor"),
        ("lambda", "lambda_state", {"params": torch.full((3,), float("nan"))}, "NaN or inf"),
        ("canonicalize", "scorer_state", "not weights", r"meta.scorer_state.*not a state dict"),
        ("canonicalize", "scorer_state", {"zzz": torch.zeros(2)}, r"meta.scorer_state\) does not fit"),
    ],
)
def test_crafted_finetuned_meta_is_refused_in_one_line(
    tmp_path: Path, method: str, key: str, value: object, match: str
) -> None:
    from equirl.vision.train import load_finetuned

    path = _saved(tmp_path, method, **{key: value})
    with pytest.raises(CheckpointError, match=match) as err:
        load_finetuned(path)
    assert "\n" not in str(err.value)


def test_extra_keys_in_finetuned_meta_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from equirl.vision.train import load_finetuned

    good = _saved(tmp_path, "lambda")
    load_finetuned(good)  # the untouched save loads
    state = dict(torch.load(good, weights_only=True)["meta"]["lambda_state"])
    state["extra"] = torch.zeros(1)
    path = _saved(tmp_path, "lambda", lambda_state=state)
    assert main(["vision", "eval", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'Unexpected key(s) in state_dict: "extra"' in err


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_cnn_weights_are_refused(tmp_path: Path, bad: float) -> None:
    net = SmallCNN(image_size=8, width=4, hidden=8)
    with torch.no_grad():
        net.head.weight[0, 0] = bad
    save_cnn(net, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"'head.weight' holds NaN or inf values"):
        load_cnn(tmp_path / "m.pt")


def test_shape_mismatch_names_the_key_and_both_shapes(tmp_path: Path) -> None:
    net = SmallCNN(image_size=8, width=4, hidden=8)
    blob = torch.load(save_cnn(net, tmp_path / "m.pt"), weights_only=True)
    blob["state_dict"]["head.weight"] = torch.zeros(7, 8)
    torch.save(blob, tmp_path / "m.pt")
    with pytest.raises(CheckpointError) as err:
        load_cnn(tmp_path / "m.pt")
    msg = str(err.value)
    assert "head.weight" in msg and "[7, 8]" in msg and "[10, 8]" in msg and "Error(s)" not in msg
