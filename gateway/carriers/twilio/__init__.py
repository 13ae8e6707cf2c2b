"""Twilio Media Streams: everything that knows Twilio.

``codec``: the sans-I/O codec of the media socket's messages and the TwiML answers; ``auth``: request
signatures; ``routes``: the voice webhook, the media socket and the stream's end; ``control``:
hang-up and transfer through the REST API; ``phone``: the softphone's Twilio side; ``carrier``: the
:class:`~gateway.carriers.base.Carrier` the application is built from.
"""

from gateway.carriers.twilio.codec import (
    CONNECTED,
    STOP,
    Connected,
    Dtmf,
    MarkAck,
    Media,
    OtherEvent,
    Start,
    Stop,
    TwilioEncoder,
    TwilioEvent,
    TwilioLeg,
    TwilioProtocolError,
    connect_twiml,
    dial_twiml,
    fast_media_payload,
    hangup_twiml,
    parse_message,
    say_twiml,
    stream_url,
)

__all__ = [
    "CONNECTED",
    "STOP",
    "Connected",
    "Dtmf",
    "MarkAck",
    "Media",
    "OtherEvent",
    "Start",
    "Stop",
    "TwilioEncoder",
    "TwilioEvent",
    "TwilioLeg",
    "TwilioProtocolError",
    "connect_twiml",
    "dial_twiml",
    "fast_media_payload",
    "hangup_twiml",
    "parse_message",
    "say_twiml",
    "stream_url",
]
