"""The daemon's ``build_gaps``: after a batch or a reconcile, which build sources the server lacks.

Runs on the engine thread (an ``after_batch`` hook), whose SFTP channel it may use: one batched
``stat`` per pass that landed something, and once after the first reconcile. A failure to read
or to ask costs this look only; the previous answer stays in ``status``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog

from opswatch.config import Config
from opswatch.core.builds import BuildGap
from opswatch.core.rules import Router
from opswatch.errors import OpswatchError
from opswatch.local.builds import SourceCheck, StatMany

if TYPE_CHECKING:
    from opswatch.sync.syncer import PassReport

log = structlog.get_logger("opswatch.rebuild")


class BuildGapWatch:
    """``daemon.after_batch``: look again when files landed or went, and publish the gaps."""

    def __init__(
        self,
        config: Config,
        router: Router,
        stat: StatMany,
        publish: Callable[[Sequence[BuildGap]], None],
    ) -> None:
        self.check = SourceCheck(config, router, stat)
        self.publish = publish
        self.looked = False

    def __call__(self, report: PassReport) -> None:
        if self.looked and not report.landed and not report.removed:
            return
        try:
            found = self.check.gaps()
        except OpswatchError as exc:
            log.warning("build_gaps_unknown", error=str(exc))
            return
        except Exception:  # a bug here must cost this look, never the engine thread
            log.exception("build_gaps_crashed")
            return
        self.looked = True
        if found:
            log.warning("build_gaps", gaps=[gap.message for gap in found[:10]], count=len(found))
        self.publish(found)
