"""Azure Communication Services: everything that knows ACS.

``codec``: the sans-I/O codec of the media socket's messages; ``auth``: Event Grid and Call
Automation tokens; ``routes``: incoming calls, callbacks and the media socket; ``control``: answer,
hang-up, transfer and keys through Call Automation; ``phone``: the softphone's ACS side;
``carrier``: the :class:`~gateway.carriers.base.Carrier` the application is built from.
"""
