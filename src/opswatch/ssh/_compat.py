"""Modules a dependency imports at start-up but uses only on a rare path: loaded on first use.

paramiko imports ``invoke`` as soon as ``paramiko.config`` is imported, only to run the command
of an ssh_config ``Match exec`` line; invoke brings PyYAML, unittest.mock and argparse along:
about 4 MB resident in a daemon that otherwise never touches them. A stand-in module takes
its place in ``sys.modules`` and imports the real one the first time an attribute is read,
so a ``Match exec`` line still works.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types

RARELY_USED = ("invoke",)

_loading = threading.Lock()


class _StandIn(types.ModuleType):
    """Answers ``import name``; any attribute read imports the real module and delegates."""

    def __getattr__(self, attr: str) -> object:
        return getattr(_real(self), attr)


def _real(stand_in: _StandIn) -> types.ModuleType:
    name = stand_in.__name__
    with _loading:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        return importlib.import_module(name)


def defer_rarely_used() -> None:
    """Put stand-ins in place; call before paramiko is imported (a module already imported,
    or not installed, is left alone: paramiko then raises its own ImportError on use)."""
    for name in RARELY_USED:
        if name not in sys.modules and importlib.util.find_spec(name) is not None:
            sys.modules[name] = _StandIn(name)
