"""Every subcommand's help shows each default once, and it is the real one (the parser's, from config.py)."""

from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from sslsteal_fast.cli import build_parser
from sslsteal_fast.config import TEMPERATURES, ProbeConfig, StealConfig, VictimTrainConfig, WatermarkConfig

#: Options whose default differs from their config field's on purpose.
_CLI_OWN = {"device"}  # every command defaults to auto (StealConfig.device is "cpu" for Python callers)


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _shown(p: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text of ``action`` as ``--help`` prints it (defaults expanded), on one line."""
    return " ".join(p._get_formatter()._expand_help(action).split())


def _documented(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if a.help not in (None, argparse.SUPPRESS) and a.option_strings]


@pytest.mark.parametrize("command", sorted(_commands()))
def test_each_default_is_shown_once_and_is_the_parsers(command: str) -> None:
    p = _commands()[command]
    assert all(a.help is not None for a in p._actions), "every option says what it is"
    for action in _documented(p):
        text = _shown(p, action)
        assert len(re.findall(r"default", text, re.IGNORECASE)) <= 1, f"{command} {action.option_strings}: {text}"
        real = action.default not in (None, argparse.SUPPRESS) and not isinstance(action.default, bool)
        if real:
            shown = re.search(r"\(default: (.*)\)$", text)
            assert shown is not None, f"{command} {action.option_strings} hides its default: {text}"
            assert shown.group(1) == str(action.default), f"{command} {action.option_strings}: {text}"
    # The whole page too (wrapped), as a user reads it.
    page = " ".join(p.format_help().split())
    assert not re.search(r"\(default: [^)]*\) \(default:", page)


@pytest.mark.parametrize(
    "command, config, prefix",
    [
        ("train-victim", VictimTrainConfig(), ""),
        ("train-victim", WatermarkConfig(), "watermark_"),
        ("steal", StealConfig(), ""),
    ],
)
def test_defaults_come_from_the_config(command: str, config: object, prefix: str) -> None:
    p = _commands()[command]
    by_dest = {a.dest: a for a in p._actions}
    checked = 0
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        action = by_dest.get(prefix + field.name)
        if action is None or field.name in _CLI_OWN or action.default is None:
            continue
        assert action.default == getattr(config, field.name), f"{command} --{action.dest}"
        checked += 1
    assert checked >= 4


def test_probe_defaults_come_from_the_config() -> None:
    d, p = ProbeConfig(), _commands()["probe"]
    defaults = {a.dest: a.default for a in p._actions if a.help != argparse.SUPPRESS}
    assert defaults["linear_iters"] == d.epochs and defaults["knn_k"] == d.knn_k
    assert (defaults["knn_temperature"], defaults["batch_size"], defaults["seed"]) == (
        d.knn_temperature,
        d.batch_size,
        d.seed,
    )


def test_per_loss_defaults_are_the_configs() -> None:
    p = _commands()["steal"]
    text = _shown(p, next(a for a in p._actions if a.dest == "temperature"))
    for loss, t in TEMPERATURES.items():
        assert f"{loss} {t:g}" in text
    victim = _commands()["train-victim"]
    assert "0.07 info_nce, 100 soft_nn" in _shown(victim, next(a for a in victim._actions if a.dest == "temperature"))
