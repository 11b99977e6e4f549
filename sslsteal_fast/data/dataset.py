"""The in-memory image dataset every stage passes around, and image-tensor helpers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sslsteal_fast.util.checks import check_int

__all__ = [
    "ImageDataset",
    "convert_channels",
    "image_digests",
    "images_sha256",
    "resize_images",
    "to_float",
    "to_uint8",
]


@dataclass
class ImageDataset:
    """Images and labels held as tensors.

    ``images``: uint8 (N, C, H, W); ``labels``: int64 (N,), in ``[0, num_classes)`` or ``-1`` for
    unlabeled rows (e.g. STL-10's ``unlabeled`` split); ``name``: where it came from (e.g. ``"shapes"``).
    Both are checked on construction (a label outside that range is a ``ValueError``).
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"ImageDataset {self.name!r}: images must be a uint8 tensor (N, C, H, W), got "
                f"{getattr(self.images, 'dtype', type(self.images))} {tuple(getattr(self.images, 'shape', ()))}"
            )
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"ImageDataset {self.name!r}: labels must be an int64 tensor (N,)")
        if self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"ImageDataset {self.name!r}: {self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )
        check_int(f"ImageDataset {self.name!r}: num_classes", self.num_classes, low=0)
        if self.labels.numel():
            low, high = int(self.labels.min()), int(self.labels.max())
            if low < -1 or high >= self.num_classes:
                raise ValueError(
                    f"ImageDataset {self.name!r}: labels must lie in [0, {self.num_classes}) (or be -1 for "
                    f"unlabeled rows), found {low}..{high}"
                )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        _, c, h, w = self.images.shape
        return int(c), int(h), int(w)

    def subset(self, index: torch.Tensor | slice) -> ImageDataset:
        """Rows selected by a slice, an int64 index tensor or a boolean mask (N,)."""
        return ImageDataset(self.images[index], self.labels[index], self.num_classes, self.name)

    def to(self, device: torch.device | str) -> ImageDataset:
        """The same dataset with both tensors on ``device``."""
        return ImageDataset(self.images.to(device), self.labels.to(device), self.num_classes, self.name)


def image_digests(images: torch.Tensor) -> list[bytes]:
    """A 16-byte BLAKE2b digest of each image's bytes (N, ...) -> N digests: equal images, equal digests.

    Used to find the same image in two sets (a probe's train and test splits, queries and a victim's
    training set) without comparing pixels pairwise.
    """
    if images.shape[0] == 0:
        return []
    rows = images.detach().cpu().contiguous().reshape(images.shape[0], -1).numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]


def images_sha256(images: torch.Tensor) -> str:
    """SHA-256 (hex) of a whole image tensor: its dtype, shape and bytes (the identity of a dataset's images)."""
    array = images.detach().cpu().contiguous().numpy()
    h = hashlib.sha256(f"{array.dtype}{tuple(array.shape)}".encode())
    h.update(array.tobytes())
    return h.hexdigest()


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape) -> float32 in [0, 1], on the same device. Float input is returned as float32."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    if images.is_floating_point():
        return images.to(torch.float32)
    raise ValueError(f"to_float: expected uint8 or floating-point images, got {images.dtype}")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] (values outside are clamped) -> uint8, rounded to nearest."""
    return images.clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) to (N, C, size, size): bilinear, antialiased when shrinking."""
    if images.shape[-2:] == (size, size):
        return images
    x = images.to(torch.float32)
    shrink = size < images.shape[-1] or size < images.shape[-2]
    out = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> (N, channels, H, W): grey is repeated to RGB; RGB becomes ITU-R 601 luma."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)
        return (images.to(torch.float32) * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels (supported: 1 <-> 3)")
