"""``shapes`` / ``shapes-ood``: a procedural 10-class image set, rendered in batches with torch.

The class is the shape (:data:`SHAPE_CLASSES`); colour, scale, position, rotation, background texture
and pixel noise are random. Two domains share the classes but not the look:

- ``"shapes"``: light, mid-saturation backgrounds with smooth textures (gradients, soft stripes, smooth
  noise); solid shaded shapes in any colour, contrast-adjusted; mild noise.
- ``"shapes-ood"``: dark backgrounds with high-frequency textures (checkerboards, polka dots, blocky
  noise, concentric rings); neon shapes filled with stripes; stronger noise.

Rendering: every pixel's position is mapped into each image's shape frame (translate, rotate, scale),
a per-class signed-distance function runs on all images of that class at once, and a one-pixel ramp
across the edge gives antialiased coverage. Everything is drawn from one ``torch.Generator`` seeded
from ``(seed, split, domain)``, so the output is a pure function of the arguments, and train and test
(different split streams) never share images.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from sslsteal_fast.data.dataset import ImageDataset, to_uint8
from sslsteal_fast.util.checks import check_int, check_positive_int

__all__ = ["DOMAINS", "SHAPE_CLASSES", "render_shapes", "shapes_dataset"]

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring", "hexagon", "diamond", "heart", "arrow")
DOMAINS = ("shapes", "shapes-ood")
SPLITS = ("train", "test")
_DEFAULT_COUNT = {"train": 5000, "test": 1000}
_CHUNK = 1024  # images rendered at once (bounds temporary memory)

_NEON = torch.tensor(
    [[1.0, 0.2, 0.6], [0.2, 1.0, 0.3], [1.0, 0.9, 0.1], [0.1, 0.9, 1.0], [1.0, 0.5, 0.0], [0.7, 0.3, 1.0]]
)
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _seed_for(seed: int, split: str, domain: str) -> int:
    state = np.random.SeedSequence([seed, SPLITS.index(split), DOMAINS.index(domain), 0x5A9E5]).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


def _polygon(rho: torch.Tensor, phi: torch.Tensor, sides: int, radius: float) -> torch.Tensor:
    """Signed distance to a regular polygon with circumradius ``radius`` (a vertex on the +x axis)."""
    k = 2.0 * math.pi / sides
    a = torch.remainder(phi, k) - k / 2
    return rho * torch.cos(a) - radius * math.cos(math.pi / sides)


def _box(x: torch.Tensor, y: torch.Tensor, half_x: float, half_y: float) -> torch.Tensor:
    """(Chebyshev) signed distance to an axis-aligned box centred at the origin."""
    return torch.maximum(x.abs() - half_x, y.abs() - half_y)


def _signed_distance(cls: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance (negative inside) to class ``cls`` in its unit frame; x, y (n, S, S).

    Exact or a close bound near the edges, which is all the antialiasing ramp needs.
    """
    name = SHAPE_CLASSES[cls]
    if name == "square":
        return _box(x, y, 0.68, 0.68)
    if name == "cross":
        return torch.minimum(_box(x, y, 0.22, 0.9), _box(x, y, 0.9, 0.22))
    if name == "diamond":
        return (x.abs() / 0.55 + y.abs() / 0.95 - 1.0) * 0.48  # 0.48 ~ distance per unit of the L1 level
    if name == "arrow":  # a shaft and a triangular head pointing along +x
        shaft = _box(x + 0.425, y, 0.475, 0.16)
        head = torch.maximum(0.05 - x, (y.abs() * 0.85 + x * 0.75 - 0.675) / 1.1336)
        return torch.minimum(shaft, head)
    if name == "heart":  # a rotated square with two circles on its upper edges
        square = (x.abs() + (y - 0.25).abs() - 0.65) / math.sqrt(2.0)
        lobes = torch.sqrt((x.abs() - 0.325) ** 2 + (y + 0.075) ** 2) - 0.46
        return torch.minimum(square, lobes)
    rho = torch.sqrt(x * x + y * y)
    if name == "circle":
        return rho - 0.85
    if name == "ring":
        return (rho - 0.7).abs() - 0.2
    phi = torch.atan2(y, x)
    if name == "triangle":
        return _polygon(rho, phi, 3, 0.95)
    if name == "hexagon":
        return _polygon(rho, phi, 6, 0.9)
    # star: five points, radius varying linearly in angle between 0.38 and 0.95
    t = torch.remainder(phi * (5 / (2 * math.pi)), 1.0)
    return (rho - 0.38 - 0.57 * (2 * t - 1).abs()) * 0.6


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [-1, 1]: (u, v), each (size, size); u grows rightwards, v downwards."""
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    v, u = torch.meshgrid(c, c, indexing="ij")
    return u, v


def _coverage(labels: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """Antialiased shape coverage in [0, 1], (n, 1, size, size), with a random pose per image.

    Coverage is a one-pixel linear ramp across the (approximate) signed distance to the edge.
    """
    n = labels.shape[0]
    scale = 0.42 + 0.38 * torch.rand(n, generator=g)
    reach = (0.95 - scale).clamp_min(0.0)
    cx = (torch.rand(n, generator=g) * 2 - 1) * reach
    cy = (torch.rand(n, generator=g) * 2 - 1) * reach
    theta = torch.rand(n, generator=g) * (2 * math.pi)
    u, v = _grid(size)
    cover = torch.empty(n, 1, size, size)
    for cls in range(len(SHAPE_CLASSES)):
        idx = (labels == cls).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        dx = u - cx[idx, None, None]
        dy = v - cy[idx, None, None]
        cos, sin = torch.cos(theta[idx])[:, None, None], torch.sin(theta[idx])[:, None, None]
        inv = (1.0 / scale[idx])[:, None, None]
        x = (cos * dx + sin * dy) * inv
        y = (cos * dy - sin * dx) * inv
        pixel = (2.0 / size) * inv  # one pixel's width in the shape's frame
        cover[idx, 0] = (0.5 - _signed_distance(cls, x, y) / pixel).clamp_(0.0, 1.0)
    return cover


def _mix(c1: torch.Tensor, c2: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Blend colours (n, 3) by weights t (n, 1, S, S) in [0, 1] -> (n, 3, S, S)."""
    return c1[:, :, None, None] * (1 - t) + c2[:, :, None, None] * t


def _direction(n: int, u: torch.Tensor, v: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Coordinate along a random direction per image: (n, 1, S, S), roughly in [-1.4, 1.4]."""
    a = torch.rand(n, generator=g) * (2 * math.pi)
    return (torch.cos(a)[:, None, None] * u + torch.sin(a)[:, None, None] * v)[:, None]


def _background(domain: str, n: int, size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Textured backgrounds (n, 3, S, S) in [0, 1] and their mean colours (n, 3)."""
    u, v = _grid(size)
    kind = torch.randint(0, 3 if domain == "shapes" else 4, (n,), generator=g)
    if domain == "shapes":
        c1 = 0.3 + 0.7 * torch.rand(n, 3, generator=g)
        c2 = 0.3 + 0.7 * torch.rand(n, 3, generator=g)
    else:
        c1 = 0.35 * torch.rand(n, 3, generator=g)
        c2 = 0.35 * torch.rand(n, 3, generator=g)
    t = torch.empty(n, 1, size, size)
    along = _direction(n, u, v, g)
    freq = torch.rand(n, 1, 1, 1, generator=g)
    phase = torch.rand(n, 1, 1, 1, generator=g) * (2 * math.pi)
    if domain == "shapes":
        lowres = F.interpolate(
            torch.rand(n, 1, 4, 4, generator=g), size=(size, size), mode="bicubic", align_corners=False
        )
        options = (
            (along + 1.5) / 3.0,  # linear gradient
            0.5 + 0.5 * torch.sin(along * math.pi * (1 + 3 * freq) + phase),  # soft stripes, 1-4 cycles
            lowres.clamp(0, 1),  # smooth noise
        )
    else:
        ortho = _direction(n, u, v, g)
        cells = 4 + torch.floor(5 * freq)
        checker = torch.remainder(torch.floor((along + 2) * cells) + torch.floor((ortho + 2) * cells), 2)
        dots = (torch.sin(along * math.pi * cells + phase) * torch.sin(ortho * math.pi * cells) > 0.5).float()
        blocky = F.interpolate(torch.rand(n, 1, 8, 8, generator=g), size=(size, size), mode="nearest")
        cx = torch.rand(n, 1, 1, 1, generator=g) * 2 - 1
        rings = 0.5 + 0.5 * torch.sin(torch.sqrt((u - cx) ** 2 + v**2) * math.pi * 2 * cells + phase)
        options = (checker, dots, blocky, rings)
    for k, pattern in enumerate(options):
        sel = kind == k
        t[sel] = pattern.expand(n, 1, size, size)[sel]
    return _mix(c1, c2, t), 0.5 * (c1 + c2)


def _foreground(domain: str, bg_mean: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """Shape fill (n, 3, S, S): shaded solid colour (``shapes``) or striped neon (``shapes-ood``)."""
    n = bg_mean.shape[0]
    u, v = _grid(size)
    along = _direction(n, u, v, g)
    if domain == "shapes":
        fg = torch.rand(n, 3, generator=g)
        bg_luma, fg_luma = bg_mean @ _LUMA, fg @ _LUMA
        weak = (bg_luma - fg_luma).abs() < 0.25
        darker = torch.where((bg_luma > 0.5)[:, None], fg * 0.35, 0.6 + 0.4 * fg)
        fg = torch.where(weak[:, None], darker, fg)
        shade = 1.0 + 0.15 * along
        return (fg[:, :, None, None] * shade).clamp(0, 1)
    pick = torch.randint(0, _NEON.shape[0], (n,), generator=g)
    fg = (_NEON[pick] + 0.1 * (torch.rand(n, 3, generator=g) * 2 - 1)).clamp(0, 1)
    stripes = (torch.sin(along * math.pi * 6) > 0).float()
    return _mix(fg, fg * 0.6, stripes)


def render_shapes(
    labels: torch.Tensor, size: int, domain: str = "shapes", *, generator: torch.Generator
) -> torch.Tensor:
    """Render one image per label: int64 (N,) -> uint8 (N, 3, size, size). Uses only ``generator``."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown shapes domain {domain!r}; valid: {', '.join(DOMAINS)}")
    out = torch.empty(labels.shape[0], 3, size, size, dtype=torch.uint8)
    g = generator
    for start in range(0, labels.shape[0], _CHUNK):
        lab = labels[start : start + _CHUNK]
        n = lab.shape[0]
        cover = _coverage(lab, size, g)
        bg, bg_mean = _background(domain, n, size, g)
        fg = _foreground(domain, bg_mean, size, g)
        img = bg * (1 - cover) + fg * cover
        lo, hi = (0.0, 0.04) if domain == "shapes" else (0.04, 0.1)
        sigma = lo + (hi - lo) * torch.rand(n, 1, 1, 1, generator=g)
        img = img + sigma * torch.randn(img.shape, generator=g)
        out[start : start + n] = to_uint8(img)
    return out


def shapes_dataset(
    domain: str = "shapes", split: str = "train", *, size: int = 32, count: int | None = None, seed: int = 0
) -> ImageDataset:
    """Generate ``count`` images (default 5000 train / 1000 test), classes balanced, in random order.

    Returns uint8 (count, 3, size, size) images and labels in ``range(10)`` (see :data:`SHAPE_CLASSES`).
    The result depends only on ``(domain, split, size, count, seed)``.
    """
    if split not in SPLITS:
        raise ValueError(f"{domain}: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if count is None:
        count = _DEFAULT_COUNT[split]
    check_positive_int(f"{domain}: count", count)
    check_int(f"{domain}: size", size, low=8)
    g = torch.Generator().manual_seed(_seed_for(seed, split, domain))
    n_cls = len(SHAPE_CLASSES)
    labels = (torch.arange(count) % n_cls)[torch.randperm(count, generator=g)]
    images = render_shapes(labels, size, domain, generator=g)
    return ImageDataset(images, labels, n_cls, domain)
