"""Azure Communication Services: everything that knows ACS.

``codec``: the sans-I/O codec of the media socket's messages; ``auth``: Event Grid and Call
Automation tokens; ``routes``: incoming calls, callbacks and the media socket; ``control``: answer,
hang-up, transfer and keys through Call Automation; ``phone``: the softphone's ACS side;
``carrier``: the :class:`~gateway.carriers.base.Carrier` the application is built from.
"""

from gateway.carriers.acs.codec import (
    AUDIO_FORMATS,
    INCOMING_CALL,
    STOP_AUDIO,
    AcsEvent,
    AcsLeg,
    AcsProtocolError,
    Audio,
    AudioMetadata,
    DtmfDigit,
    OtherKind,
    called_number,
    caller_number,
    parse_message,
)

__all__ = [
    "AUDIO_FORMATS",
    "INCOMING_CALL",
    "STOP_AUDIO",
    "AcsEvent",
    "AcsLeg",
    "AcsProtocolError",
    "Audio",
    "AudioMetadata",
    "DtmfDigit",
    "OtherKind",
    "called_number",
    "caller_number",
    "parse_message",
]
