"""Plivo Audio Streaming: everything that knows Plivo.

``codec``: the sans-I/O codec of the media socket's messages and the Plivo XML answers; ``auth``:
request signatures (``X-Plivo-Signature-V3``); ``routes``: the answer URL, the media socket, the
stream's end and the transfer's XML; ``outbound``: calls the gateway places through the REST API,
and their callbacks; ``control``: transfer through the REST API; ``phone``: the
softphone's Plivo side; ``carrier``: the :class:`~gateway.carriers.base.Carrier` the application is
built from.
"""
