"""Vonage Voice API: everything that knows Vonage.

``codec``: the sans-I/O codec of the media WebSocket (binary L16 audio, JSON text events) and the
answer NCCO; ``auth``: signed webhooks and the application JWT of the Voice API; ``routes``: the
answer and event webhooks and the media socket; ``control``: hang-up, transfer and keys through the
Voice API; ``outbound``: calls the gateway places through the Voice API; ``phone``: the softphone's
Vonage side; ``carrier``: the :class:`~gateway.carriers.base.Carrier` the application is built from.
"""
