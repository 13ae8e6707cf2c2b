"""Who may open the console's media socket: whoever may use the console (see
:mod:`gateway.console.auth`). With ``gateway.console_token`` set, the operator's session cookie
(set at the console's login) must come with the upgrade, from the console's own page; without a
token the console is off and so is its phone, unless ``insecure_dev_mode`` is on.

The check runs before the socket is accepted, so a refusal is an HTTP answer (404, 403 or 401)
and nothing is opened on Voice Live.
"""

from __future__ import annotations

from aiohttp import web

from gateway import metrics
from gateway.config import GatewayConfig
from gateway.console.auth import refusal
from gateway.log import get_logger

__all__ = ["media_refusal"]

log = get_logger("gateway.console")

_REASONS = {404: "console off", 403: "foreign origin", 401: "no console session"}


def media_refusal(request: web.Request, config: GatewayConfig) -> web.Response | None:
    """None when this upgrade may go on; else the console's answer (counted as a refused request)."""
    answer = refusal(request, config)
    if answer is not None:
        reason = _REASONS.get(answer.status, str(answer.status))
        metrics.AUTH_REJECTIONS.inc("browser", "media", reason)
        if answer.status == 401:  # (a foreign origin is logged by the console's check itself)
            log.warning("console media socket refused: no valid console session", status=401)
        elif answer.status == 404:
            log.info("console media socket refused: the console is off", status=404)
    return answer
