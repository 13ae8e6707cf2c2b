"""WebSocket frames written straight to a socket's transport: the one place frames are built.

The gateway's hot path sends one small text message per caller frame and a piece of bot audio
with its mark per phone write. The libraries' own send paths (a lock or context manager per
message, an ``os.urandom`` system call per mask) cost more than the forwarding itself, so these
frames are built here, by RFC 6455 section 5.2, and written with one ``transport.write``:

* to the phone (the gateway is the WebSocket server): unmasked frames, several in one write;
* to Voice Live (the gateway is the client): masked frames, masks from a seeded PRNG as aiohttp's
  client does (masking protects proxies from page scripts; a server-side client runs none), with
  websockets' public ``apply_mask`` (its C speedup where built).

Only unfragmented data frames are built (text, and binary to the phone for carriers that carry raw
audio); everything else takes the libraries' own paths. Callers check that the connection is open
before writing.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Iterable
from typing import Any

try:  # websockets' C speedup, as its own frames use; its pure-Python fallback where it is not built
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

__all__ = ["client_text_frame", "server_text_frames", "write_server_frames"]

_FIN_TEXT = 0x81
_FIN_BINARY = 0x82
_mask_bits = random.Random(os.urandom(32)).getrandbits


def _header(size: int, masked: int, opcode: int = _FIN_TEXT) -> bytes:
    if size < 126:
        return bytes((opcode, masked | size))
    if size < 65536:
        return struct.pack("!BBH", opcode, masked | 126, size)
    return struct.pack("!BBQ", opcode, masked | 127, size)


def server_text_frames(messages: Iterable[str | bytes]) -> bytes:
    """Unmasked frames for a server socket, one per message (text for ``str``, binary for
    ``bytes``), ready for one write."""
    out = bytearray()
    for message in messages:
        if type(message) is bytes:
            out += _header(len(message), 0, _FIN_BINARY)
            out += message
            continue
        data = message.encode()  # type: ignore[union-attr]
        out += _header(len(data), 0)
        out += data
    return bytes(out)


def write_server_frames(transport: Any, messages: Iterable[str | bytes], backlog_limit: int) -> bool:
    """Write ``messages`` to a server socket's ``transport`` now, in one system call. False (nothing
    written) when the library's own path must send them: no transport, a closing one, or more than
    ``backlog_limit`` bytes not yet sent (that path waits for the socket to drain)."""
    if transport is None or transport.is_closing() or transport.get_write_buffer_size() > backlog_limit:
        return False
    transport.write(server_text_frames(messages))
    return True


def client_text_frame(message: str) -> bytes:
    """One masked text frame for a client socket."""
    data = message.encode()
    mask = _mask_bits(32).to_bytes(4, "big")
    return _header(len(data), 0x80) + mask + apply_mask(data, mask)
