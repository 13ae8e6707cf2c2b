"""``gateway serve --workers N``: N gateway processes on one port, so one machine uses every core.

Each worker is a whole gateway (``gateway serve --reuse-port``); the kernel spreads new connections
over them (SO_REUSEPORT). Calls share nothing, so any worker can take any call: a call's media
socket carries everything it needs. The supervisor restarts a worker that dies, passes SIGTERM and
SIGINT on to every worker, and exits once they have all stopped.
"""

from __future__ import annotations

import signal
import subprocess
import time
from types import FrameType

from gateway.log import get_logger

log = get_logger("gateway.workers")

RESTART_DELAY_S = 1.0


def worker_command(argv: list[str]) -> list[str]:
    """The command line of one worker: the same as ours, one process, sharing the port."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return [*out, "--reuse-port"]


def supervise(count: int, argv: list[str]) -> int:
    command = worker_command(argv)
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in workers:
            if process.poll() is None:
                process.send_signal(signum)

    workers = [subprocess.Popen(command) for _ in range(count)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("workers started", workers=count, pids=[p.pid for p in workers])
    while True:
        for i, process in enumerate(workers):
            code = process.poll()
            if code is not None and not stopping:
                log.error("a worker stopped; starting another", pid=process.pid, exit_code=code)
                time.sleep(RESTART_DELAY_S)
                workers[i] = subprocess.Popen(command)
        if stopping:
            codes = [process.wait() for process in workers]
            log.info("workers stopped", exit_codes=codes)
            return 0 if all(code == 0 for code in codes) else 1
        time.sleep(0.2)  # the supervisor's own poll of its children
