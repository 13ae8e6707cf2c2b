"""What ``gateway serve --workers N`` gives its workers: one signing key and one metrics directory for
all, and a command line that shares the port (the workers serving calls: tests/sockets/test_workers.py)."""

from __future__ import annotations

from gateway.workers import SIGNING_KEY_ENV, worker_command, worker_environment


def test_workers_share_one_new_key_unless_one_is_set_and_write_metrics_to_one_directory() -> None:
    made = worker_environment({"PATH": "/bin", SIGNING_KEY_ENV: ""}, "/tmp/m")
    assert len(made[SIGNING_KEY_ENV]) >= 32 and made["PATH"] == "/bin"
    assert made["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/m"
    assert worker_environment({}, "/tmp/m")[SIGNING_KEY_ENV] != made[SIGNING_KEY_ENV]  # one per run
    assert worker_environment({SIGNING_KEY_ENV: "the-operators-key"}, "/tmp/m")[SIGNING_KEY_ENV] == "the-operators-key"


def test_worker_command_drops_workers_and_shares_the_port() -> None:
    assert worker_command(["py", "-m", "gateway", "serve", "--workers", "2", "--port", "9"]) == [
        "py", "-m", "gateway", "serve", "--port", "9", "--reuse-port"]
    assert worker_command(["gateway", "serve", "--workers=3"]) == ["gateway", "serve", "--reuse-port"]
