"""Telephony voice-bot gateway: phone calls bridged to Azure AI Voice Live."""

__version__ = "0.1.0"
