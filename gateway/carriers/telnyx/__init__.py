"""Telnyx media streaming over WebSocket, answered with TeXML: everything that knows Telnyx.

``codec``: the sans-I/O codec of the media socket's messages and the TeXML answers; ``auth``: Telnyx's
Ed25519 webhook signatures; ``routes``: the TeXML voice webhook, the media socket and the stream's
end; ``control``: transfers through the TeXML REST API; ``settings``: its section of config.yaml;
``phone``: the softphone's Telnyx side; ``carrier``: the :class:`~gateway.carriers.base.Carrier` the
application is built from.
"""
