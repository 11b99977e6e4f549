"""A probe's two splits must be disjoint: a test image the probe was fitted on scores memory, not features."""

from __future__ import annotations

import torch

from sslsteal_fast.data import ImageDataset, image_digests

__all__ = ["check_disjoint"]


def check_disjoint(
    train: ImageDataset | torch.Tensor,
    test: ImageDataset | torch.Tensor,
    *,
    train_name: str | None = None,
    test_name: str | None = None,
) -> None:
    """Refuse a probe whose test set holds an image of its train set (byte-identical, found by content hash).

        ``train`` / ``test``: datasets or image tensors (N, C, H, W); ``train_name`` / ``test_name``: how
    the message names them (default: the datasets' names, quoted).
        Raises ``ValueError`` naming both sets and how many test images are also training images.
    """
    train_images, test_images = (d.images if isinstance(d, ImageDataset) else d for d in (train, test))
    for where, images in (("train", train_images), ("test", test_images)):
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError(f"check_disjoint: {where} must be an ImageDataset or (N, C, H, W) images")
    if train_images.shape[1:] != test_images.shape[1:] or train_images.dtype != test_images.dtype:
        return  # images of another shape or type cannot be byte-identical
    seen = set(image_digests(train_images))
    shared = sum(d in seen for d in image_digests(test_images))
    if shared:
        names = [
            name if name is not None else repr(d.name if isinstance(d, ImageDataset) else where)
            for name, d, where in ((train_name, train, "train"), (test_name, test, "test"))
        ]
        raise ValueError(
            f"probe train set {names[0]} and test set {names[1]} share {shared} of the test set's "
            f"{len(test_images)} images (identical bytes): a probe scored on images it was fitted on measures "
            "memorisation, not the encoder; score it on a held-out split (e.g. the dataset's 'test' split)"
        )
