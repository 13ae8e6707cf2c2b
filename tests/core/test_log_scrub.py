"""Registered secrets never reach a log line, however the line renders them."""

from __future__ import annotations

import io
import json

import pytest

from gateway import log

SECRET = 'key"with\\odd-chars-ü-4242'


@pytest.fixture
def lines():
    """Log into a buffer (JSON or console), then as by default again."""
    buf = io.StringIO()

    def configure(json_output: bool) -> io.StringIO:
        log.configure(level="debug", json_output=json_output, stream=buf)
        return buf

    log.register_secret(SECRET)
    try:
        yield configure
    finally:
        log.configure()


def _forms() -> list[str]:
    return [SECRET, json.dumps(SECRET)[1:-1], repr(SECRET)[1:-1], json.dumps(repr(SECRET)[1:-1])[1:-1]]


def _log_everywhere() -> None:
    logger = log.get_logger("test", bound=SECRET)
    logger.info(f"the event names {SECRET}", value=SECRET, nested={"list": [1, f"x {SECRET} y"], SECRET: True},
                raw=SECRET.encode())
    try:
        raise ValueError(f"refused: {SECRET}")
    except ValueError:
        logger.exception("failed")


@pytest.mark.parametrize("json_output", [True, False])
def test_a_secret_is_scrubbed_in_every_form_a_line_can_hold_it(lines, json_output: bool) -> None:
    buf = lines(json_output)
    _log_everywhere()
    text = buf.getvalue()
    assert text.count("\n") >= 2 and "refused: ***" in text and "the event names ***" in text
    assert [form for form in _forms() if form in text] == []
    if json_output:  # still JSON, one object a line
        first, second = (json.loads(line) for line in text.splitlines()[:2])
        assert first["value"] == "***" and first["nested"]["list"][1] == "x *** y" and "***" in first["nested"]
        assert first["bound"] == "***" and second["event"] == "failed"


def test_lines_without_secrets_are_left_as_they_are(lines) -> None:
    buf = lines(True)
    log.get_logger("test").info("barge-in", heard_ms=300, item_id="item_a1")
    line = json.loads(buf.getvalue())
    assert (line["event"], line["heard_ms"], line["item_id"]) == ("barge-in", 300, "item_a1")
