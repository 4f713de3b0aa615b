"""CLIP zero-shot classification made invariant to quarter turns and mirrors.

A :class:`CLIPZeroShot` turns a ``transformers`` ``CLIPModel`` into an NCHW classifier: the class
embeddings come from a prompt ensemble (each class name in several templates, embeddings normalised,
averaged and normalised again; Radford et al., 2021), computed once and cached; the logits are
``logit_scale · <image embedding, class embedding>``. It exposes ``features`` (the normalised image
embedding) so λ-equitune's λ sees the frozen image features (Basu et al., NeurIPS 2023)::

    from equirl.vision import symmetrize_classifier
    from equirl.vision.clip import CLIPZeroShot, load_clip

    model, tokenizer = load_clip("openai/clip-vit-base-patch32")     # OfflineError when unreachable
    zs = CLIPZeroShot.from_classnames(model, tokenizer, ["cat", "dog"])
    inv = symmetrize_classifier(zs, group="rot90", method="equizero", proxy="max_prob")
    logits = inv(clip_preprocess(images))                               # images: (N, 3, H, W) in [0, 1]
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equirl.errors import CheckpointError, ConfigError, EquirlError
from equirl.registry import BASE, canonical_method
from equirl.utils.progress import ProgressFn, subtask
from equirl.vision.config import CLIP_METHODS

__all__ = [
    "CLIP_MEAN",
    "CLIP_METHODS",
    "CLIP_STD",
    "DEFAULT_TEMPLATES",
    "CLIPZeroShot",
    "clip_image_size",
    "clip_preprocess",
    "clip_zero_shot",
    "load_clip",
    "text_classifier",
]

log = logging.getLogger(__name__)

#: a small prompt ensemble (in the spirit of CLIP's ImageNet templates)
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of the small {}.",
    "a rotated photo of a {}.",
    "a drawing of a {}.",
)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: per model: ``{key: (tokenizer or None, weights version, class embeddings)}`` (:func:`text_classifier`)
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], tuple[Any, Any, Tensor]]] = (
    weakref.WeakKeyDictionary()
)


def load_clip(
    name: str = "openai/clip-vit-base-patch32", cache_dir: str | None = None
) -> tuple[nn.Module, Any]:
    """Load a ``CLIPModel`` and its tokenizer from a local folder, the local hub cache or the hub.

    Without network (and not cached) this fails at once with one :class:`~equirl.errors.OfflineError`
    line instead of the hub client's retry loop (:func:`equirl.utils.hub.load_from_hub`). A local folder
    must hold a CLIP (``config.json`` ``model_type: clip``) with all its weights, none NaN / inf
    (:mod:`equirl.utils.hf_local`): one :class:`~equirl.errors.CheckpointError` line otherwise.

    :param name: a hub id such as ``"openai/clip-vit-base-patch32"`` or a local folder.
    :param cache_dir: the Hugging Face cache folder (default: the standard one).
    """
    from equirl.utils.hf_local import check_loaded, check_model_folder, load_checked
    from equirl.utils.hub import load_from_hub

    def load(n: str, local_only: bool) -> tuple[nn.Module, Any, dict[str, Any]]:
        from transformers import AutoTokenizer, CLIPModel

        loaded: Any = CLIPModel.from_pretrained(
            n, cache_dir=cache_dir, local_files_only=local_only, output_loading_info=True
        )
        clip, info = loaded
        tok = AutoTokenizer.from_pretrained(n, cache_dir=cache_dir, local_files_only=local_only)
        return clip.eval(), tok, info

    # a local folder is checked before it is read: a GPT-2 folder would load as a random CLIP
    folder = check_model_folder(name, "CLIP", ("clip",))
    if folder is not None:
        model, tok, info = load_checked(lambda: load(str(folder), True), folder, "CLIP")
        if len(tok) <= 1:
            raise CheckpointError(f"CLIP folder {folder} holds no tokenizer vocabulary: refused")
    else:
        model, tok, info = load_from_hub(
            load, name, "CLIP", valid=lambda mt: len(mt[1]) > 1, cache_dir=cache_dir
        )
    check_loaded(model, info, name, "CLIP")  # no missing or NaN / inf weights
    return model, tok


def _as_tensor(out: Any) -> Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output with ``pooler_output`` (5)."""
    if isinstance(out, Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if isinstance(pooled, Tensor):
        return pooled
    raise EquirlError(f"unexpected CLIP feature output {type(out).__name__}")


def _weights_version(model: nn.Module) -> tuple[tuple[int, int, int], ...] | None:
    """What changes whenever ``model``'s weights may have: each parameter's and buffer's identity, storage
    and in-place version counter (bumped by ``load_state_dict``, optimiser steps, ``p.mul_()``...);
    ``None`` when a tensor tracks no version (an inference tensor): then nothing is cached."""
    try:
        return tuple((id(t), t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))
    except RuntimeError:
        return None


@torch.no_grad()
def text_classifier(
    clip_model: nn.Module,
    tokenizer: Callable[..., Any] | None = None,
    classnames: Sequence[str] | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    input_ids: Tensor | None = None,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """``(num_classes, dim)`` normalised class embeddings from a prompt ensemble, cached per model.

    Either ``tokenizer`` + ``classnames`` (each formatted into every template), or pre-tokenised
    ``input_ids`` of shape ``(num_classes, num_templates, L)`` (or ``(num_classes, L)``).

    A cached result is returned only for the same model object with unchanged weights (no in-place
    update, no ``load_state_dict`` since) and the same tokenizer object (not one with the same name:
    in-memory tokenizers have none) or the same token ids, class names and templates.
    """
    tok_ref: Any = None
    if input_ids is None:
        if tokenizer is None or not classnames:
            raise EquirlError("text_classifier needs a tokenizer and class names, or input_ids")
        if not templates or any("{}" not in t for t in templates):
            raise EquirlError("every prompt template must contain '{}' for the class name")
        key: tuple[Any, ...] = ("text", id(tokenizer), tuple(classnames), tuple(templates))
        tok_ref = tokenizer  # kept with the entry: its id cannot be reused while the entry lives
    else:
        key = (
            "ids",
            tuple(input_ids.shape),
            input_ids.detach().cpu().numpy().tobytes(),
            None if attention_mask is None else tuple(attention_mask.shape),
            None if attention_mask is None else attention_mask.detach().cpu().numpy().tobytes(),
        )
    version = _weights_version(clip_model)
    cache = _CACHE.setdefault(clip_model, {})
    hit = cache.get(key)
    if hit is not None and version is not None and hit[0] is tok_ref and hit[1] == version:
        return cast(Tensor, hit[2])
    if input_ids is None:
        assert tokenizer is not None and classnames is not None
        texts = [t.format(c) for c in classnames for t in templates]
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        ids = enc["input_ids"].view(len(classnames), len(templates), -1)
        mask = enc.get("attention_mask")
        mask = mask.view(ids.shape) if mask is not None else None
    else:
        ids = input_ids if input_ids.dim() == 3 else input_ids.unsqueeze(1)
        mask = None if attention_mask is None else attention_mask.view(ids.shape)
    C, T, L = ids.shape
    get_text = cast(Any, clip_model).get_text_features
    emb = _as_tensor(
        get_text(
            input_ids=ids.reshape(C * T, L), attention_mask=None if mask is None else mask.reshape(C * T, L)
        )
    )
    emb = F.normalize(emb.float(), dim=-1).view(C, T, -1).mean(1)
    out = F.normalize(emb, dim=-1)
    if version is not None:
        cache[key] = (tok_ref, version, out)
    log.debug("built the CLIP text classifier for %d classes x %d templates", C, T)
    return out


class CLIPZeroShot(nn.Module):
    """A CLIP model as an image classifier: ``logits = scale · normalize(image_emb) @ class_emb.T``.

    :param clip_model: a ``transformers`` ``CLIPModel`` (frozen: evaluation only unless you finetune).
    :param class_embeddings: ``(num_classes, dim)`` normalised text embeddings (:func:`text_classifier`).
    :param logit_scale: the temperature; default the model's own ``logit_scale.exp()``.
    """

    def __init__(
        self, clip_model: nn.Module, class_embeddings: Tensor, logit_scale: float | None = None
    ) -> None:
        super().__init__()
        self.clip = clip_model
        self.register_buffer("class_embeddings", class_embeddings.detach().clone())
        if logit_scale is None:
            ls = getattr(clip_model, "logit_scale", None)
            logit_scale = float(ls.detach().exp()) if isinstance(ls, Tensor) else 100.0
        self.scale = float(logit_scale)

    @classmethod
    def from_classnames(
        cls,
        clip_model: nn.Module,
        tokenizer: Callable[..., Any],
        classnames: Sequence[str],
        templates: Sequence[str] = DEFAULT_TEMPLATES,
    ) -> CLIPZeroShot:
        """Build the prompt-ensemble classifier (cached per model, class names and templates)."""
        return cls(clip_model, text_classifier(clip_model, tokenizer, classnames, templates))

    @classmethod
    def from_input_ids(
        cls, clip_model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None
    ) -> CLIPZeroShot:
        """Build it from pre-tokenised prompts ``(num_classes, num_templates, L)``."""
        return cls(
            clip_model, text_classifier(clip_model, input_ids=input_ids, attention_mask=attention_mask)
        )

    def features(self, pixel_values: Tensor) -> Tensor:
        """``(B, dim)`` normalised image embeddings."""
        get_image = cast(Any, self.clip).get_image_features
        return F.normalize(_as_tensor(get_image(pixel_values=pixel_values)).float(), dim=-1)

    def forward(self, pixel_values: Tensor) -> Tensor:
        cls_emb: Tensor = self.class_embeddings  # type: ignore[assignment]
        return self.scale * self.features(pixel_values) @ cls_emb.t().to(torch.float32)


def clip_image_size(clip_model: nn.Module) -> int:
    """The image size a ``CLIPModel`` takes (``config.vision_config.image_size``; 224 when it says none)."""
    vision = getattr(getattr(clip_model, "config", None), "vision_config", None)
    size = getattr(vision, "image_size", None)
    if isinstance(size, (tuple, list)) and size:
        size = size[0]
    return int(size) if isinstance(size, int) and not isinstance(size, bool) and size > 0 else 224


def clip_preprocess(
    images: Tensor, size: int = 224, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
) -> Tensor:
    """CLIP's preprocessing in torch: resize the short side to ``size``, centre-crop square, normalise.

    The output is square, so quarter turns and mirrors act exactly on it (and commute with it when the
    input is square).

    :param images: ``(N, 3, H, W)`` in ``[0, 1]`` (grey images are repeated to 3 channels).
    """
    if images.dim() != 4:
        raise EquirlError(f"expected NCHW images, got shape {tuple(images.shape)}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    h, w = images.shape[-2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    x = F.interpolate(images.float(), size=(nh, nw), mode="bicubic", align_corners=False).clamp(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top : top + size, left : left + size]
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    sd = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / sd


def clip_zero_shot(
    folder: str | Path,
    model: str = "openai/clip-vit-base-patch32",
    group: str = "rot90",
    methods: Sequence[str] = CLIP_METHODS,
    proxy: str = "max_prob",
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> tuple[int, dict[str, dict[str, float]]]:
    """CLIP zero-shot accuracy on an image folder under every group element, per method.

    :param folder: ``root/<class>/<image>``; the class names are the sub-folder names (``_`` → space).
    :param model: a hub id or a local folder (:func:`load_clip`).
    :param group: ``rot90``, ``mirror`` or ``rot90+mirror``.
    :param methods: among :data:`CLIP_METHODS` (``base``, ``equitune``, ``equizero``; aliases such as
        ``plain`` accepted, the result keys are the canonical names; λ needs labels: use ``fit_lambda``).
    :param proxy: equizero's proxy: ``max_prob`` or ``entropy``.
    :param batch_size: images per forward pass.
    :param progress: called as ``progress(done, total)`` over methods x (``|G|`` + 1) evaluations.
    :returns: ``(number of images, {method: {element: accuracy, ..., "random", "mean"}})``.
    """
    from equirl.vision.classifier import evaluate_transforms, symmetrize_classifier
    from equirl.vision.data import load_image_folder
    from equirl.vision.groups import vision_action

    order = vision_action(group).group.order
    methods = [canonical_method(m) for m in methods]
    bad = [m for m in methods if m not in CLIP_METHODS]
    if bad or not methods:
        raise ConfigError(
            f"methods must be among {', '.join(CLIP_METHODS)} (λ needs labels: use fit_lambda), got {bad}"
        )
    clip, tok = load_clip(model)
    size = clip_image_size(clip)
    data = load_image_folder(folder, size=max(256, size), mode="RGB")
    zs = CLIPZeroShot.from_classnames(clip, tok, [c.replace("_", " ") for c in data.classes])
    x = clip_preprocess(data.images, size=size)  # the size the model was built for, not always 224
    total = len(methods) * (order + 1)
    rows: dict[str, dict[str, float]] = {}
    for k, m in enumerate(methods):
        net = zs if m == BASE else symmetrize_classifier(zs, group, m, proxy=proxy)
        rows[m] = evaluate_transforms(
            net,
            x,
            data.labels,
            group,
            batch_size=batch_size,
            progress=subtask(progress, k * (order + 1), total),
        )
    return len(data), rows
