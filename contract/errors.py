"""Bad user input, reported as one line. Imports nothing of the project, so every module may."""

from __future__ import annotations

import argparse


class ConfigError(ValueError):
    """Bad user input. The message is one line naming the bad value."""


def require(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless `ok`."""
    if not ok:
        raise ConfigError(message)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one ConfigError line (callers print it and exit 2),
    not argparse's usage block."""

    def error(self, message: str) -> None:
        raise ConfigError(message)
