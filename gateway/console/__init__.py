"""The operator console (``GET /console``): a page in the gateway where an operator calls a profile
from the microphone and hears the bot, and watches (and ends) the calls in progress. Off unless
``gateway.console_token`` (``GATEWAY_CONSOLE_TOKEN``) is set, or ``insecure_dev_mode`` is on."""
