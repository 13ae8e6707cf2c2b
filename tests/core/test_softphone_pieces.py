"""The softphone's pure pieces: Twilio's signature, TwiML parsing, the playout buffer (the softphone
against a fake gateway over sockets: tests/sockets/test_softphone.py)."""

from __future__ import annotations

import pytest

from gateway.carriers.twilio.phone import parse_twiml, twilio_signature
from gateway.softphone import CallError, Playout


def test_twilio_signature_matches_published_example() -> None:
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
              "From": "+12349013030", "To": "+18005551212"}
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_parse_twiml() -> None:
    url, params = parse_twiml(
        b'<Response><Connect action="/after"><Stream url="wss://gw.example.com/twilio/media" name="bot">'
        b'<Parameter name="tenant" value="acme"/><Parameter name="t" value="x&amp;y"/></Stream>'
        b"</Connect></Response>",
        "https://gw.example.com/twilio/voice",
    )
    assert url == "wss://gw.example.com/twilio/media"
    assert params == {"tenant": "acme", "t": "x&y"}
    # relative and http(s) stream URLs become ws(s) on the webhook's host
    assert parse_twiml('<Response><Connect><Stream url="/m"/></Connect></Response>',
                       "https://h.example:8443/twilio/voice")[0] == "wss://h.example:8443/m"
    assert parse_twiml('<Response><Connect><Stream url="http://h/m"/></Connect></Response>',
                       "https://x/v")[0] == "ws://h/m"
    with pytest.raises(CallError, match=r"no <Connect><Stream> \(it has <Say>, <Hangup>\)"):
        parse_twiml("<Response><Say>hi</Say><Hangup/></Response>", "https://x/v")
    with pytest.raises(CallError, match="did not answer with TwiML"):
        parse_twiml("<html><body>oops", "https://x/v")
    with pytest.raises(CallError, match="has no url"):
        parse_twiml("<Response><Connect><Stream/></Connect></Response>", "https://x/v")
    with pytest.raises(CallError, match="not a TwiML <Response>"):
        parse_twiml("<Reply/>", "https://x/v")


def test_playout_marks_and_clear() -> None:
    p = Playout()
    assert p.add_mark("now") is True  # nothing queued: due at once
    p.append(b"\x01" * 300)
    assert p.add_mark("a") is False
    p.append(b"\x02" * 100)
    assert p.add_mark("b") is False
    assert p.play(160) == b"\x01" * 160
    assert p.due_marks() == []
    assert p.play(160) == b"\x01" * 140 + b"\x02" * 20
    assert p.due_marks() == ["a"]
    assert p.clear() == (80, ["b"])
    assert (p.played, p.discarded, p.buffered) == (320, 80, 0)
    assert p.play(160) == b""
