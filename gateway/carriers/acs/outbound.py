"""Calls the gateway places on Azure Communication Services: Call Automation ``create_call`` with
bidirectional media streaming to the gateway's media socket, as an answered incoming call gets.

Call Automation offers no answering-machine detection: a placed ACS call opens like a person
answered (the greeting once the callee spoke, or after the profile's pause). Its progress comes
as Call Automation events to ``/acs/callbacks`` (CallConnected, CallDisconnected, CreateCallFailed).
"""

from __future__ import annotations

import asyncio
import secrets

from aiohttp import web

from gateway.auth import public_url_for
from gateway.bridge import CONTEXT
from gateway.carriers.acs.codec import AUDIO_FORMATS
from gateway.carriers.acs.routes import STATE, STREAM_TOKEN_TTL_S, streaming_options
from gateway.carriers.acs.settings import AcsSettings
from gateway.carriers.base import OutboundError, OutboundRequest, PlacedCall
from gateway.config import GatewayConfig

CREATE_TIMEOUT_S = 15.0  # the SDK's own timeouts (with its retries) run to minutes


def refusal(config: GatewayConfig, client: object) -> str | None:
    if client is None:
        return "acs needs acs.connection_string (ACS_CONNECTION_STRING) to place calls"
    return None


async def place_call(app: web.Application, request: OutboundRequest) -> PlacedCall:
    from azure.communication.callautomation import PhoneNumberIdentifier
    from azure.core.exceptions import AzureError, HttpResponseError

    ctx, client = app[CONTEXT], app[STATE].client
    why = refusal(ctx.config, client)
    if why is not None:
        raise OutboundError(why, status=400)
    # the stream token names this call by a reference of the gateway's (a reconnecting socket
    # presents the same one); the media socket learns the call's id from its headers
    claims = {"profile": request.profile, "correlation": "placed-" + secrets.token_hex(8), "called": request.to,
              "caller": request.from_}
    token = ctx.tokens.issue(claims, STREAM_TOKEN_TTL_S, carrier="acs")
    try:
        async with asyncio.timeout(CREATE_TIMEOUT_S):
            result = await client.create_call(
                target_participant=PhoneNumberIdentifier(request.to),
                source_caller_id_number=PhoneNumberIdentifier(request.from_),
                callback_url=public_url_for(request.public_base, "/acs/callbacks"),
                media_streaming=streaming_options(ctx.config, request.public_base, token),
                operation_context=request.profile)
    except HttpResponseError as exc:
        status = 400 if 400 <= (exc.status_code or 0) < 500 else 502
        raise OutboundError(f"ACS refused the call (HTTP {exc.status_code}): {exc.message}"[:300],
                            status=status) from None
    except AzureError as exc:
        raise OutboundError(f"ACS Call Automation cannot be reached: {exc}"[:300]) from None
    except TimeoutError:
        raise OutboundError(f"ACS Call Automation did not answer within {CREATE_TIMEOUT_S:g} s") from None
    call_id = getattr(result, "call_connection_id", None)
    if not call_id:
        raise OutboundError("ACS answered without a call connection id")
    # its media socket builds the call at the rate the call was created with (see routes._new_call)
    return PlacedCall(call_id, "queued", detects_machine=False,
                      audio=AUDIO_FORMATS[AcsSettings.of(ctx.config).sample_rate])
