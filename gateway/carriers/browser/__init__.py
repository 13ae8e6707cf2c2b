"""The console's phone: the operator console's web page, calling a profile from the microphone.

``codec``: the sans-I/O codec of the console's media socket (binary PCM16 at 24 kHz both ways, JSON
control and the call's events for the page); ``auth``: the console's session check on the upgrade;
``routes``: the media socket (``GET /console/media``); ``control``: telling the page its call ended;
``settings``: the ``browser`` section of config.yaml; ``phone``: the softphone's side (``gateway call
--carrier browser``); ``carrier``: the :class:`~gateway.carriers.base.Carrier` the application is
built from.
"""
