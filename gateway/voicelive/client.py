"""Voice Live client: endpoint URL, authentication (api-key or a cached Entra ID token) and connect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from gateway import __version__
from gateway.config import Profile, VoiceLiveSettings
from gateway.frames import client_text_frame
from gateway.log import get_logger
from gateway.loopshare import urgent

log = get_logger("gateway.voicelive")

REALTIME_PATH = "/voice-live/realtime"
USER_AGENT = f"voicelive-phone-gateway/{__version__}"
MAX_MESSAGE_BYTES = 16 * 2**20


def realtime_url(
    endpoint: str,
    *,
    api_version: str,
    model: str | None = None,
    agent_name: str | None = None,
    agent_project: str | None = None,
) -> str:
    """WebSocket URL of a realtime session.

    ``https`` becomes ``wss`` and ``http`` becomes ``ws`` (``wss``/``ws`` are kept); the path
    ``/voice-live/realtime`` is appended to any path prefix of the endpoint; query parameters
    already in the endpoint are kept.
    """
    parts = urlsplit(endpoint)
    scheme = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"Voice Live endpoint must be an https://, http://, wss:// or ws:// URL: {endpoint!r}")
    path = parts.path.rstrip("/")
    if not path.endswith(REALTIME_PATH):
        path += REALTIME_PATH
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.setdefault("api-version", api_version)
    if agent_name:
        query.setdefault("agent-name", agent_name)
        if agent_project:
            query.setdefault("agent-project-name", agent_project)
    elif model:
        query.setdefault("model", model)
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


class _AccessToken(Protocol):
    # read-only, so azure-core's AccessToken (a NamedTuple) matches
    @property
    def token(self) -> str: ...
    @property
    def expires_on(self) -> int: ...


class AsyncTokenCredential(Protocol):
    async def get_token(self, *scopes: str, **kwargs: Any) -> _AccessToken: ...


class TokenProvider:
    """One Entra ID token shared by every call, refreshed shortly before it expires.

    Concurrent calls that need a refresh wait for the same request. If a refresh fails while the
    cached token is still valid, the cached token is used and the failure logged.
    """

    def __init__(
        self,
        credential: AsyncTokenCredential,
        scope: str,
        *,
        refresh_margin_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credential = credential
        self._scope = scope
        self._margin = refresh_margin_s
        self._clock = clock
        self._token: str | None = None
        self._expires_on = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    def _fresh(self) -> bool:
        return self._token is not None and self._expires_on - self._clock() > self._margin

    async def get(self) -> str:
        if self._fresh():
            return self._token  # type: ignore[return-value]
        async with self._lock:
            if self._fresh():
                return self._token  # type: ignore[return-value]
            try:
                self.fetches += 1
                access = await self._credential.get_token(self._scope)
            except Exception as exc:
                if self._token is not None and self._expires_on > self._clock():
                    log.warning("Entra ID token refresh failed; using the current token until it expires",
                                error=type(exc).__name__)
                    return self._token
                raise
            self._token, self._expires_on = access.token, float(access.expires_on)
            log.info("Entra ID token acquired", scope=self._scope,
                     valid_for_s=int(self._expires_on - self._clock()))
            return self._token


class VoiceLiveConnection(ClientConnection):
    """The realtime socket, with a lean path for the gateway's hot path: one text message per
    send, framed by :func:`gateway.frames.client_text_frame` and written at once (see there why).
    Anything else (binary data, a connection that is not open) takes websockets' own path."""

    on_closed: Callable[[], None] | None = None  # told once the connection is lost (a resource's load)
    pinged_by: Keepalive | None = None  # (websockets' ``keepalive`` is its own per-connection task)
    # barge-ins received and not yet taken by the call: the messages before them stop waiting for
    # room in the loop's share (see gateway.loopshare)
    urgent_waiting: int = 0

    def process_event(self, event: Any) -> None:
        if type(event) is Frame and event.opcode is Opcode.TEXT and urgent(event.data):
            self.urgent_waiting += 1
        super().process_event(event)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        hook, self.on_closed = self.on_closed, None
        if hook is not None:
            hook()
        if self.pinged_by is not None:
            self.pinged_by.discard(self)

    async def send(self, message: Any, text: bool | None = None) -> None:
        if type(message) is not str or text is not None or not self.send_nowait(message):
            await super().send(message, text=text)
        elif self.paused:
            await self.drain()

    def send_nowait(self, message: str) -> bool:
        """Write one text message now; False (nothing written) when websockets' own path must
        send it (the connection is not open). The caller awaits :meth:`drain` when the
        connection is paused."""
        if self.state is not State.OPEN:
            return False
        self.transport.write(client_text_frame(message))
        return True

    def send_all_nowait(self, messages: list[str]) -> bool:
        """Write text messages now, in one system call (a barge-in's two or three go together); False
        (nothing written) when the connection is not open."""
        if self.state is not State.OPEN:
            return False
        self.transport.write(b"".join([client_text_frame(message) for message in messages]))
        return True


PING_INTERVAL_S = 20.0


class Keepalive:
    """Pings every open Voice Live session of a worker from one task, instead of websockets' task per
    connection (about 1 KiB a call). Every ``interval_s`` each session gets a ping; one whose pong has
    not come by the next round is cut, as websockets' own keepalive cuts it (the call sees its session
    lost, and reconnects if it may)."""

    def __init__(self, interval_s: float = PING_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._sessions: dict[VoiceLiveConnection, asyncio.Future[float] | None] = {}  # -> the pong awaited

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, connection: VoiceLiveConnection) -> None:
        connection.pinged_by = self
        self._sessions[connection] = None

    def discard(self, connection: VoiceLiveConnection) -> None:
        self._sessions.pop(connection, None)

    async def ping_all(self) -> int:
        """One round: cut the sessions that did not answer the last ping, ping the others. Returns how
        many were cut."""
        cut = 0
        for connection, pong in list(self._sessions.items()):
            if connection.state is not State.OPEN:
                continue
            if pong is not None and not pong.done():
                log.warning("Voice Live did not answer a ping: the session is cut",
                            waited_s=self.interval_s)
                connection.transport.abort()
                cut += 1
                continue
            try:
                self._sessions[connection] = asyncio.ensure_future(await connection.ping())
            except ConnectionClosed:
                self.discard(connection)
            except Exception as exc:  # one session's trouble must not stop the others' keepalive
                log.warning("could not ping a Voice Live session", error=repr(exc))
        return cut

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.ping_all()


class _Connect(connect):
    """websockets' ``connect`` without following redirects: a redirect would open a socket the
    connection budget never counted, and websockets keeps the ``api-key`` header across origins.
    A 3xx is a refusal like any other status."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


class VoiceLiveConnectError(Exception):
    """The realtime session could not be opened. ``status`` is the HTTP status when there was one, and
    ``retry_after_s`` what the service's Retry-After said (None: it said nothing usable)."""

    def __init__(self, message: str, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (an HTTP date is not worth parsing here)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds <= 3600 else None


class VoiceLiveConnector:
    """Opens one realtime WebSocket per call with the configured endpoint and credentials."""

    def __init__(
        self,
        settings: VoiceLiveSettings,
        *,
        endpoint: str | None = None,
        credential: AsyncTokenCredential | None = None,
        api_key: SecretStr | None = None,
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint or settings.endpoint
        if not self.endpoint:
            raise ValueError("no Voice Live endpoint")
        key = api_key or settings.api_key
        self._api_key = key.get_secret_value() if key else None
        self._credential = credential
        self._owns_credential = False
        self._tokens: TokenProvider | None = None

    @property
    def auth_kind(self) -> str:
        """api-key when a key is set; Microsoft Entra ID when a credential was given; none for a
        loopback endpoint without a key (the local simulator); otherwise Microsoft Entra ID."""
        if self._api_key:
            return "api-key"
        if self._credential is not None:
            return "entra-id"
        host = (urlsplit(self.endpoint).hostname or "").lower()
        if host in ("127.0.0.1", "localhost", "::1"):
            return "none"
        return "entra-id"

    def _token_provider(self) -> TokenProvider:
        if self._tokens is None:
            if self._credential is None:
                from azure.identity.aio import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
                self._owns_credential = True
            self._tokens = TokenProvider(self._credential, self.settings.token_scope)
        return self._tokens

    async def headers(self) -> dict[str, str]:
        kind = self.auth_kind
        if kind == "api-key":
            return {"api-key": self._api_key}  # type: ignore[dict-item]
        if kind == "none":
            return {}
        return {"Authorization": "Bearer " + await self._token_provider().get()}

    def url_for(self, profile: Profile) -> str:
        agent = profile.agent
        return realtime_url(
            self.endpoint,  # type: ignore[arg-type]
            api_version=self.settings.api_version,
            model=profile.model,
            agent_name=agent.name if agent else None,
            agent_project=agent.project if agent else None,
        )

    async def connect(self, profile: Profile) -> VoiceLiveConnection:
        url = self.url_for(profile)
        try:
            headers = await self.headers()
        except Exception as exc:
            raise VoiceLiveConnectError(f"could not get an Entra ID token: {type(exc).__name__}") from None
        try:
            connection = await _Connect(
                url,
                create_connection=VoiceLiveConnection,
                additional_headers=headers,
                user_agent_header=USER_AGENT,
                compression=None,
                open_timeout=self.settings.connect_timeout_s,
                close_timeout=2,
                max_size=MAX_MESSAGE_BYTES,
                ping_interval=None,  # the worker's Keepalive pings every session (a task per session costs 1 KiB)
            )
        except InvalidStatus as exc:
            # websockets keeps a failed handshake's error on its protocol, which the frames of the error's
            # traceback hold: without the traceback, no cycle keeps those frames (and the call they lead to)
            exc.__traceback__ = None
            status = exc.response.status_code
            raise VoiceLiveConnectError(f"Voice Live refused the session (HTTP {status})", status,
                                        _retry_after(exc.response.headers.get("Retry-After"))) from None
        except InvalidHandshake as exc:
            exc.__traceback__ = None  # (as above)
            raise VoiceLiveConnectError(f"Voice Live handshake failed: {exc}") from None
        except TimeoutError:
            raise VoiceLiveConnectError("Voice Live did not answer in time") from None
        except OSError as exc:
            raise VoiceLiveConnectError(f"Voice Live unreachable: {exc.strerror or exc}") from None
        assert isinstance(connection, VoiceLiveConnection)  # create_connection made it
        # The handshake's request and response headers, kept for nothing (about 2 KiB a call): websockets
        # reads only whether ``response`` is set (the handshake is over), the gateway reads neither. The
        # response's headers are emptied in place: websockets' frame parser keeps the response too.
        connection.request = None
        if connection.response is not None:
            connection.response.headers.clear()
        return connection

    async def close(self) -> None:
        if self._owns_credential and self._credential is not None:
            await self._credential.close()  # type: ignore[attr-defined]
