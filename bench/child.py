"""The opswatch daemon as the benchmark runs it: ``opswatch run``'s engine in its own process.

The real pieces (watchdog observer, debouncer, planner, manifest, SshRemote over one SSH
connection) built by ``opswatch.runner.build_daemon``, exactly what ``opswatch run`` serves. It
prints one line, ``watching``, once the first reconcile is done and the daemon is connected and
idle, so the benchmark can time a start without polling a control socket from outside.

    python3 bench/child.py CONFIG
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from opswatch import logs
from opswatch.config import load_config
from opswatch.model import State
from opswatch.paths import state_paths
from opswatch.runner import build_daemon


def main(config_path: str) -> int:
    logs.setup(fmt="json", level="warning", stream=sys.stderr)
    config = load_config(Path(config_path))
    daemon = build_daemon(config, state_paths(config.source))

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def announce() -> None:
        while not daemon.stopping.is_set():
            status = daemon.status()
            if status.state is State.WATCHING and status.connected and status.last_sync:
                print("watching", flush=True)
                return
            time.sleep(0.005)

    threading.Thread(target=announce, name="announce", daemon=True).start()
    daemon.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
