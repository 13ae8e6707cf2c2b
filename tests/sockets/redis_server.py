"""A real ``redis-server`` for the tests: started on a free loopback port without persistence, and
stopped at the end. A machine without it fails the tests that need it (no silent skip)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

START_TIMEOUT_S = 10.0  # safety bound for redis-server to start or stop


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A ``redis-server`` on 127.0.0.1 without persistence, started and stopped by the test."""

    def __init__(self, *options: str) -> None:
        self.options = options
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail("redis-server is not installed; these tests need it (Debian/Ubuntu: "
                        "apt-get install redis-server)", pytrace=False)
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.output = b""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.binary is not None and self.process is None
        self.output = b""
        process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             *self.options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        ready = threading.Event()

        def read() -> None:  # the server's log until it exits: readiness, and the reason if it fails
            assert process.stdout is not None
            for line in process.stdout:
                self.output += line
                if b"Ready to accept connections" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(START_TIMEOUT_S) or process.poll() is not None:
            process.kill()
            process.wait()
            pytest.fail(f"redis-server did not start on port {self.port}:\n{self.output.decode(errors='replace')}")
        self.process = process

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_redis(*options: str) -> Iterator[RedisServer]:
    server = RedisServer(*options)
    server.start()
    try:
        yield server
    finally:
        server.stop()
