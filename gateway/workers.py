"""``gateway serve --workers N``: N gateway processes on one port, so one machine uses every core.

Each worker is a whole gateway (``gateway serve --reuse-port``); the kernel spreads new connections
over them (SO_REUSEPORT). Calls share nothing, so any worker can take any call: a call's media
socket carries everything it needs, signed with the call token key. The supervisor gives all its
workers one such key (``GATEWAY_SIGNING_KEY``, made for this run when it is not set), so that a
webhook answered by one worker and a media socket accepted by another agree. It also gives them one
fresh metrics directory (``PROMETHEUS_MULTIPROC_DIR``), so that any worker's ``/metrics`` reports
them all, and removes it when they have stopped. Inside it, ``workers/`` (``GATEWAY_WORKERS_DIR``) is
where the workers share their calls in progress with the console, so that whichever worker a console
request reaches lists, and can end, the calls of all of them (see :mod:`gateway.console.shared`); and
``failed-calls/`` (``GATEWAY_STATE_DIR``) what any worker tells a carrier's follow-up about a failed
call. One process (no ``--workers``) has neither: it keeps all of that to itself.

The supervisor restarts a worker that dies (its live gauges, such as calls in progress, stop
counting), passes SIGTERM and SIGINT on to every worker, and exits once they have all stopped. It
passes SIGHUP on too: every worker reloads its configuration (see :mod:`gateway.reload`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from gateway.failures import STATE_DIR_ENV
from gateway.log import get_logger
from gateway.metrics import MULTIPROC_DIR_ENV

log = get_logger("gateway.workers")

RESTART_DELAY_S = 1.0
POLL_S = 0.2
SIGNING_KEY_ENV = "GATEWAY_SIGNING_KEY"
WORKERS_ENV = "GATEWAY_WORKERS"  # how many workers share the port (set by the supervisor for each)
WORKERS_DIR_ENV = "GATEWAY_WORKERS_DIR"  # the directory where the workers share their calls with the console


def worker_count(env: Mapping[str, str] = os.environ) -> int:
    """How many workers of this gateway share its port (1 unless run by ``gateway serve --workers N``)."""
    try:
        return max(1, int(env.get(WORKERS_ENV, "1")))
    except ValueError:
        return 1


def workers_dir(metrics_dir: str) -> str:
    """Where the workers of one supervisor share their calls with the console (inside their metrics
    directory: made with it, removed with it)."""
    return os.path.join(metrics_dir, "workers")


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


def worker_environment(base: Mapping[str, str], metrics_dir: str, count: int = 1) -> dict[str, str]:
    """The workers' environment: ours, with one call token key for all of them (a new one unless
    ``GATEWAY_SIGNING_KEY`` is set), the directory where they all write their metrics (and, inside
    it, where they share their calls with the console), and how many they are (each takes its share
    of the Voice Live connection budget)."""
    env = dict(base)
    env[WORKERS_ENV] = str(count)
    if not env.get(SIGNING_KEY_ENV):
        env[SIGNING_KEY_ENV] = secrets.token_urlsafe(48)
    env[MULTIPROC_DIR_ENV] = metrics_dir
    env[STATE_DIR_ENV] = os.path.join(metrics_dir, "failed-calls")  # what any worker tells a carrier's follow-up
    env[WORKERS_DIR_ENV] = workers_dir(metrics_dir)
    return env


class Workers:
    """The worker processes of one supervisor."""

    def __init__(self, command: list[str], env: dict[str, str], metrics_dir: str) -> None:
        self.command = command
        self.env = env
        self.metrics_dir = metrics_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.stopping = False

    def start(self, count: int) -> None:
        while len(self.processes) < count and not self.stopping:  # a signal now reaches those started
            self.processes.append(self._spawn())
        log.info("workers started", workers=count, pids=self.pids, metrics_dir=self.metrics_dir)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command, env=self.env)

    def _exited(self, process: subprocess.Popen[bytes]) -> None:
        """A worker is gone: its live gauges (calls in progress) stop counting; its counters stay."""
        mark_process_dead(process.pid, self.metrics_dir)

    def stop(self, signum: int) -> None:
        self.stopping = True
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signum)

    def reload(self) -> None:
        """Every worker reloads its configuration (a worker still starting reads the file anyway)."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGHUP)
        log.info("SIGHUP passed on to the workers: they reload the configuration", pids=self.pids)

    def restart_exited(self) -> None:
        for i, process in enumerate(self.processes):
            code = process.poll()
            if code is None or self.stopping:
                continue
            self._exited(process)
            log.error("a worker stopped; starting another", pid=process.pid, exit_code=code)
            time.sleep(RESTART_DELAY_S)
            if not self.stopping:  # a signal during the pause: no new worker that would miss it
                self.processes[i] = self._spawn()

    def wait(self) -> list[int]:
        codes = [process.wait() for process in self.processes]
        for process in self.processes:
            self._exited(process)
        return codes


def _run(workers: Workers, count: int) -> int:
    def stop(signum: int, _frame: FrameType | None) -> None:
        workers.stop(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: workers.reload())
    workers.start(count)
    while not workers.stopping:
        workers.restart_exited()
        time.sleep(POLL_S)  # the supervisor's own poll of its children
    codes = workers.wait()
    log.info("workers stopped", exit_codes=codes)
    return 0 if all(code == 0 for code in codes) else 1


def supervise(count: int, argv: list[str]) -> int:
    """Run ``count`` workers of the command line ``argv`` until SIGTERM or SIGINT; 0 if all ended well."""
    if not os.environ.get(SIGNING_KEY_ENV):
        log.info("GATEWAY_SIGNING_KEY is not set: the workers share a key made for this run "
                 "(set it when more than one machine or container serves the same calls)")
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")  # (readable by this user only)
    try:
        os.mkdir(workers_dir(metrics_dir), mode=0o700)
        workers = Workers(worker_command(argv), worker_environment(os.environ, metrics_dir, count), metrics_dir)
        return _run(workers, count)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
