"""Asterisk's WebSocket channel driver (chan_websocket, also behind ARI ``externalMedia`` with
``transport=websocket``): everything that knows Asterisk.

``codec``: the sans-I/O codec of the media socket (binary µ-law frames, plain-text or JSON control
messages); ``auth``: the credentials on the WebSocket upgrade; ``routes``: the media socket Asterisk
dials; ``control``: hang-up over the socket; ``outbound``: calls placed through ARI; ``phone``: the
softphone's Asterisk side; ``carrier``: the :class:`~gateway.carriers.base.Carrier` the application
is built from.
"""
