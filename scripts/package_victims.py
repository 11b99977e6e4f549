"""Train the built-in demo's victims from scratch and package them (maintainers; `make package-victims`).

The recipes are the ones the demo and the defense study ask the victim cache for, so each packaged
entry is found by its cache key:

- ``demo``: ``sweep/configs/demo.toml``'s ``[victim.train]`` (the plain victim of both studies);
- ``demo-watermark``: the same run with the rotation watermark (``DefenseStudyConfig``);
- ``demo-independent``: the same recipe with another seed on disjoint images.

Each is trained with ``SSLSTEAL_PRETRAINED=0`` in a fresh cache, probed on the demo's probe sets
(and, for ``demo``, next to an untrained and a supervised encoder of the same architecture), then
copied with its sha256 into ``sslsteal_fast/pretrained/``.

Usage: python scripts/package_victims.py [--only NAME ...] [--cache DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=None, help="package only these recipes")
    parser.add_argument("--cache", type=Path, default=None, help="cache folder to train in (default: a temporary one)")
    parser.add_argument("--supervised-epochs", type=int, default=60)
    args = parser.parse_args()

    os.environ["SSLSTEAL_PRETRAINED"] = "0"  # train every recipe from scratch
    cache = args.cache or Path(tempfile.mkdtemp(prefix="sslsteal-package-"))
    os.environ["SSLSTEAL_CACHE"] = str(cache)

    from sslsteal_fast.config import WatermarkConfig
    from sslsteal_fast.data import SimCLRAugment, load_dataset
    from sslsteal_fast.models import load_checkpoint
    from sslsteal_fast.ownership import WatermarkHook
    from sslsteal_fast.probes import probe_encoder, supervised_encoder, untrained_encoder
    from sslsteal_fast.sweep import DefenseStudyConfig, demo_config
    from sslsteal_fast.victim import trained_victim
    from sslsteal_fast.victim.pretrained import write_packaged

    demo = demo_config()
    study = DefenseStudyConfig()
    victim = demo.victim.train
    assert victim is not None
    if study.victim().identity() != victim.identity():
        sys.exit("the defense study's victim recipe differs from demo.toml's; align DefenseStudyConfig first")
    watermark = WatermarkConfig(dataset=study.wm_dataset, weight=study.wm_weight)
    recipes = {
        "demo": (victim, None, "the demo's SimCLR victim (sweep/configs/demo.toml)"),
        "demo-watermark": (study.victim(), watermark, "the demo victim's recipe with the rotation watermark"),
        "demo-independent": (
            study.victim(seed=study.seed + 1, data_seed=4),
            None,
            "the demo victim's recipe, another seed, disjoint images (an independent encoder)",
        ),
    }
    train_ds, test_ds = demo.probe.train.load(), demo.probe.test.load()
    probe_cfg = demo.probe.config
    probe_spec = {
        "train": _load_args(demo.probe.train),
        "test": _load_args(demo.probe.test),
        "epochs": probe_cfg.epochs,
    }

    def probe(model: torch.nn.Module) -> dict[str, float]:
        scores = probe_encoder(model, train_ds, test_ds, probe_cfg)
        return {"probe_top1": scores.linear.top1, "knn_top1": scores.knn.top1}

    for name, (cfg, wm, description) in recipes.items():
        if args.only and name not in args.only:
            continue
        hooks = [WatermarkHook(wm)] if wm is not None else []
        start = time.perf_counter()
        cached = trained_victim(dataclasses.replace(cfg, progress=True), hooks, log=print)
        seconds = time.perf_counter() - start
        model, meta = load_checkpoint(cached.prefix)
        measured = {
            **probe(model),
            "probe": probe_spec,
            "tolerance_points": 2.0,
            "train_seconds": round(float(meta["train_seconds"]), 1),
            "wall_seconds": round(seconds, 1),
            "machine": _machine(),
            "final_loss": meta["epoch_losses"][-1],
        }
        if name == "demo":
            data = load_dataset(cfg.dataset, "train", size=cfg.image_size, count=cfg.count, seed=cfg.data_seed)
            measured["untrained"] = probe(untrained_encoder(cfg.arch))
            aug = SimCLRAugment(
                cfg.image_size,
                strength=0.5,
                min_scale=cfg.crop_min_scale,
                rotation=cfg.rotation,
                translate=cfg.translate,
                min_zoom=cfg.min_zoom,
                grayscale_p=0.2,
            )
            sup = supervised_encoder(cfg.arch, data, epochs=args.supervised_epochs, augment=aug, progress=True)
            views = {k: v for k, v in vars(aug).items() if not k.startswith("_")}
            measured["supervised"] = {**probe(sup), "epochs": args.supervised_epochs, "augment": views}
        files = ["victim.safetensors", "victim.json"] + [p.name for h in hooks for p in h.artifacts(cached.prefix)]
        entry = write_packaged(
            ROOT / "sslsteal_fast" / "pretrained",
            name,
            source_folder=cached.prefix.parent,
            files=files,
            recipe={
                **cfg.identity(),
                **({"watermark": dataclasses.asdict(wm)} if wm is not None else {}),
            },
            cache_entry=cached.prefix.parent.name,
            description=description,
            measured=measured,
        )
        print(f"packaged {name}: {entry.cache_entry}: {measured}")
    return 0


def _load_args(ref) -> dict:
    """A probe split as ``load_dataset`` keyword arguments (how ``train-victim --recipe`` reloads it)."""
    if ref.slice is not None:
        raise ValueError(f"{ref.describe()}: a sliced probe split cannot be recorded as load_dataset arguments")
    return {"spec": ref.spec, "split": ref.split, **ref.options}


if __name__ == "__main__":
    raise SystemExit(main())
