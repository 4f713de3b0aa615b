"""Image data without torchvision: an image-folder loader (PIL) and scikit-learn's bundled digits.

:func:`load_digits` is real, offline data (the UCI handwritten digits shipped with scikit-learn:
1,797 images of 8x8 pixels, 10 classes), upsampled bilinearly so that quarter turns act on a
reasonably sized grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from equirl.errors import EquirlError
from equirl.utils.io import printable

__all__ = ["ImageDataset", "load_digits", "load_image_folder", "split_dataset"]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class ImageDataset:
    """Images ``(N, C, H, W)`` float32 in ``[0, 1]`` with integer labels ``(N,)`` and class names."""

    images: Tensor
    labels: Tensor
    classes: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: Tensor) -> ImageDataset:
        """The rows ``idx``."""
        return ImageDataset(self.images[idx], self.labels[idx], list(self.classes))


def load_digits(size: int = 16) -> ImageDataset:
    """scikit-learn's handwritten digits (1,797 images, 10 classes) as ``(N, 1, size, size)`` in ``[0, 1]``.

    :param size: output side (8 keeps the original grid; larger values upsample bilinearly).
    """
    from sklearn.datasets import load_digits as _sk_digits

    if size < 8:
        raise EquirlError(f"digits image size must be >= 8, got {size}")
    d = _sk_digits()
    x = torch.from_numpy(np.asarray(d.images, dtype=np.float32) / 16.0).unsqueeze(1)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    y = torch.from_numpy(np.asarray(d.target, dtype=np.int64))
    return ImageDataset(x.contiguous(), y, [str(c) for c in range(10)])


def split_dataset(data: ImageDataset, n_test: int, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """A seeded random split into ``(train, test)`` with ``n_test`` test images."""
    n = len(data)
    if not 0 < n_test < n:
        raise EquirlError(f"n_test must be in 1..{n - 1}, got {n_test}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return data.subset(perm[n_test:]), data.subset(perm[:n_test])


def load_image_folder(root: str | Path, size: int | None = None, mode: str = "RGB") -> ImageDataset:
    """Load ``root/<class>/<image>`` (one sub-folder per class, sorted names) with PIL.

    A class sub-folder without images is refused (one line naming it), not made a class of no images.

    :param root: the folder.
    :param size: resize every image to ``size x size`` (required when the images differ in size).
    :param mode: PIL mode, ``"RGB"`` (3 channels) or ``"L"`` (1 channel).
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise EquirlError(f"image folder not found: {root}")
    if mode not in ("RGB", "L"):
        raise EquirlError(f"mode must be 'RGB' or 'L', got {mode!r}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise EquirlError(f"{root} has no class sub-folders (expected root/<class>/<image files>)")
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    for ci, c in enumerate(classes):
        files = sorted(f for f in (root / c).iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES and f.is_file())
        if not files:  # an empty folder would be a class no image belongs to
            raise EquirlError(
                f"class folder {printable(root / c)} has no images ({', '.join(sorted(_IMAGE_SUFFIXES))}): "
                "add images or remove the folder"
            )
        for f in files:
            try:
                with Image.open(f) as raw:
                    im = raw.convert(mode)
                    if size is not None:
                        im = im.resize((size, size), Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as exc:
                raise EquirlError(f"cannot read image {f}: {exc}") from None
            if arrays and arr.shape != arrays[0].shape:
                raise EquirlError(
                    f"{f} has shape {arr.shape}, others {arrays[0].shape}: pass size= to resize"
                )
            arrays.append(arr)
            labels.append(ci)
    if not arrays:
        raise EquirlError(f"no images found under {root} (suffixes: {', '.join(sorted(_IMAGE_SUFFIXES))})")
    x = torch.from_numpy(np.stack(arrays))
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    return ImageDataset(x.contiguous(), torch.tensor(labels, dtype=torch.int64), classes)
