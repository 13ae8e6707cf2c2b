"""Genesys Cloud AudioConnector (the bidirectional AudioHook protocol): everything that knows Genesys.

``codec``: the sans-I/O codec of the AudioHook session (JSON control messages and binary PCMU audio);
``auth``: the ``X-API-KEY`` check and the HTTP message signature on the WebSocket upgrade;
``routes``: the AudioHook WebSocket; ``control``: the close transaction after the gateway's
``disconnect``; ``phone``: the softphone's Genesys side; ``carrier``: the
:class:`~gateway.carriers.base.Carrier` the application is built from.
"""
