"""structlog, configured once: a console renderer on a TTY, JSON lines otherwise.

paramiko's and watchdog's stdlib logging go through the same pipeline, so a service's journal
holds one format only.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")


def setup(
    fmt: str = "auto", level: str = "info", stream: TextIO | None = None, *, one_shot: bool = False
) -> None:
    """``fmt`` is "console", "json", "human" or "auto".

    "auto" is "human" for a one-shot command (a person reads its output: plain
    ``warning: event key=value`` lines, no timestamps or logger names), and for the daemon
    console on a TTY, JSON lines otherwise (a service manager's journal).
    """
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "human" if one_shot else "console" if stream.isatty() else "json"
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if fmt == "console"
        else _human
        if fmt == "human"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.processors.format_exc_info],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if fmt != "console" else _identity,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    # paramiko's transport chatter at INFO is noise in a daemon's log; keep its warnings.
    logging.getLogger("paramiko").setLevel(max(root.level, logging.WARNING))
    logging.getLogger("watchdog").setLevel(max(root.level, logging.WARNING))


def _identity(
    _logger: object, _name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    return event


def _human(_logger: object, _name: str, event: structlog.types.EventDict) -> str:
    """``warning: identity_unusable path=… error=…``: one line a person reads, escaped."""
    level = str(event.pop("level", "info"))
    text = escaped(str(event.pop("event", "")))
    trace = event.pop("exception", None)
    for noise in ("timestamp", "logger", "logger_name"):
        event.pop(noise, None)
    fields = " ".join(f"{key}={escaped(str(value))}" for key, value in event.items())
    line = f"{level}: {text}" + (f" {fields}" if fields else "")
    return line + (f"\n{trace}" if trace else "")


# C0 and C1 controls, DEL, and the bidi controls that reorder what a terminal shows.
_UNSAFE = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A))
}


def escaped(text: str) -> str:
    """``text`` safe to print on a terminal: control characters shown as ``\\x1b``."""
    return text.translate(_UNSAFE)
