"""Local Hugging Face model and tokenizer folders, checked before ``transformers`` reads them.

``transformers`` fails on a broken local folder with whatever its loaders raise (``SafetensorError``,
``AttributeError``, a ``RuntimeError`` after a many-line load report, ``tokenizers``' bare
``Exception``), or worse, succeeds: a GPT-2 folder given as CLIP loads a randomly initialised CLIP with
every weight missing. Every local folder the language and vision adapters load goes through here:

* :func:`local_path` tells a path (``/...``, ``./...``, ``~...``, or anything that exists) from a hub id,
  so a missing path or a file is named as such instead of "not in the local Hugging Face cache";
* :func:`check_model_folder` reads ``config.json`` and its ``model_type`` and checks weights are there,
  before any model is built;
* :func:`load_checked` turns whatever the loader raises into one :class:`~equirl.errors.CheckpointError`
  line, and :func:`check_loaded` refuses missing weights and NaN / inf weights.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from equirl.errors import CheckpointError, ConfigError, EquirlError, first_cause
from equirl.utils.io import printable, read_json

__all__ = ["check_loaded", "check_model_folder", "check_tokenizer_path", "load_checked", "local_path"]

T = TypeVar("T")

#: the weight files ``from_pretrained`` reads from a folder (one of them must be there)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def local_path(name: str | Path) -> Path | None:
    """The local path ``name`` means, or ``None`` for a hub id: a path starts with ``/``, ``./``,
    ``../`` or ``~``, or exists (``gpt2`` is a hub id unless a folder ``gpt2`` is here)."""
    text = str(name)
    p = Path(text).expanduser()
    if isinstance(name, Path) or text.startswith(("/", "./", "../", "~", ".\\", "..\\")) or p.exists():
        return p
    return None


def _missing(name: str | Path, what: str, p: Path) -> None:
    if not p.exists():
        raise ConfigError(f"{what} {printable(name, 200)}: not found (no such file or folder)")


def check_model_folder(name: str | Path, what: str, model_types: Sequence[str]) -> Path | None:
    """For a local path (:func:`local_path`): check it is a model folder of one of ``model_types`` and
    return it; ``None`` for a hub id (left to the hub loader).

    :param what: how the messages name it (``"GPT-2 model"``, ``"CLIP"``...).
    :param model_types: the ``config.json`` ``model_type`` values accepted (``("gpt2",)``...).
    :raises ConfigError: the path does not exist, or is a file.
    :raises CheckpointError: no ``config.json``, another ``model_type``, or no weight file.
    """
    p = local_path(name)
    if p is None:
        return None
    shown = printable(name, 200)
    _missing(name, what, p)
    if not p.is_dir():
        raise ConfigError(f"{what} {shown} is a file, not a model folder (config.json and the weights)")
    if not (p / "config.json").is_file():
        raise CheckpointError(f"{what} folder {shown} is not a model folder: it has no config.json")
    config = read_json(p / "config.json", f"{what} config")
    mt = config.get("model_type") if isinstance(config, dict) else None
    if mt not in model_types:
        raise CheckpointError(
            f"{what} folder {shown} holds a {printable(mt, 40)!r} model (config.json model_type), not "
            f"{' or '.join(map(repr, model_types))}: give a {what} folder"
        )
    if not any((p / f).is_file() for f in WEIGHT_FILES):
        raise CheckpointError(f"{what} folder {shown} has no weights ({' or '.join(WEIGHT_FILES[::2])})")
    return p


def check_tokenizer_path(name: str | Path, what: str) -> Path | None:
    """For a local path: check it is a folder and return it; ``None`` for a hub id.

    :raises ConfigError: the path does not exist, or is a file.
    """
    p = local_path(name)
    if p is None:
        return None
    _missing(name, what, p)
    if not p.is_dir():
        raise ConfigError(
            f"{what} {printable(name, 200)} is a file, not a tokenizer folder "
            "(vocab.json + merges.txt, or tokenizer.json)"
        )
    return p


def load_checked(load: Callable[[], T], folder: str | Path, what: str) -> T:
    """``load()`` with anything it raises (but equirl's own errors) as one :class:`CheckpointError` line
    naming the folder: ``transformers`` and ``tokenizers`` raise ``SafetensorError``, ``AttributeError``,
    bare ``Exception``... on broken files, with ANSI colour codes in some messages."""
    try:
        return load()
    except EquirlError:
        raise
    except Exception as exc:
        text = _ANSI.sub("", str(exc)).strip()
        cause = first_cause(Exception(text)) if text else ""
        raise CheckpointError(
            f"cannot load {what} from folder {printable(folder, 200)}: {type(exc).__name__}"
            + (f": {printable(cause, 240)}" if cause else "")
            + " (a truncated or corrupt file?)"
        ) from None


def check_loaded(model: Any, info: dict[str, Any] | None, name: str | Path, what: str) -> None:
    """Refuse a model that ``from_pretrained`` built with weights missing from its files (they would be
    random) or whose weights hold NaN / inf values, in one :class:`CheckpointError` line.

    :param info: ``from_pretrained(..., output_loading_info=True)``'s second value (``None``: not checked).
    """
    import torch

    missing = list((info or {}).get("missing_keys") or ())
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(
            f"{what} {printable(name, 200)} lacks weights the model needs ({printable(missing[0], 80)}{more}): "
            "they would be random; give a complete model folder"
        )
    for key, value in _named_tensors(model):
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            raise CheckpointError(
                f"{what} {printable(name, 200)}: weight {printable(key, 80)!r} holds NaN or inf values: refused"
            )


def _named_tensors(model: Any) -> Iterable[tuple[str, Any]]:
    yield from model.named_parameters()
    yield from model.named_buffers()
