"""What every command shares: the ``App`` context, error mapping, JSON output.

Each command group is a module of this package; ``cli/main.py`` registers them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import ParamSpec, TypeVar

import click

from opswatch.config import Config, load_config
from opswatch.errors import OpswatchError
from opswatch.paths import StatePaths, state_paths

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class App:
    """What every command gets: where the config is, loaded on first use."""

    config_path: Path
    log_format: str
    log_level: str
    _config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    @property
    def paths(self) -> StatePaths:
        return state_paths(self.config.source)


def expected_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print an ``OpswatchError`` as one line and exit with its code."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except OpswatchError as exc:
            problems = getattr(exc, "problems", None) or [str(exc)]
            for problem in problems:
                click.echo(f"error: {problem}", err=True)
            sys.exit(exc.exit_code)

    return wrapper


pass_app = click.make_pass_decorator(App)


def echo_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))
