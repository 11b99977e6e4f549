"""Datasets as uint8 tensors, and batched SimCLR augmentations.

>>> train = load_dataset("shapes", "train", size=32, count=4000, seed=0)   # built in, no download
>>> test = load_dataset("cifar10:~/data/cifar-10-batches-py", "test")      # official python batches
>>> views = SimCLRAugment(32)(to_float(train.images[:256]))               # (256, 3, 32, 32) in [0, 1]
"""

from __future__ import annotations

from sslsteal_fast.data.augment import SimCLRAugment, blur_kernel_size
from sslsteal_fast.data.dataset import (
    ImageDataset,
    convert_channels,
    image_digests,
    images_sha256,
    resize_images,
    to_float,
    to_uint8,
)
from sslsteal_fast.data.registry import (
    BUILTIN_DATASETS,
    DATASETS,
    DISK_DATASETS,
    check_dataset,
    load_dataset,
    parse_spec,
    resolve_spec,
)
from sslsteal_fast.data.shapes import SHAPE_CLASSES, render_shapes

__all__ = [
    "BUILTIN_DATASETS",
    "DATASETS",
    "DISK_DATASETS",
    "SHAPE_CLASSES",
    "ImageDataset",
    "SimCLRAugment",
    "blur_kernel_size",
    "check_dataset",
    "convert_channels",
    "image_digests",
    "images_sha256",
    "load_dataset",
    "parse_spec",
    "render_shapes",
    "resize_images",
    "resolve_spec",
    "to_float",
    "to_uint8",
]
