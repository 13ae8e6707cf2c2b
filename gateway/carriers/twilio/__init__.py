"""Twilio Media Streams: everything that knows Twilio.

``codec``: the sans-I/O codec of the media socket's messages and the TwiML answers; ``auth``: request
signatures; ``routes``: the voice webhook, the media socket and the stream's end; ``control``:
hang-up and transfer through the REST API; ``phone``: the softphone's Twilio side; ``carrier``: the
:class:`~gateway.carriers.base.Carrier` the application is built from.
"""
