"""Voice Live's share of each pass of the event loop (gateway.loopshare): over real loopback sockets,
a caller frame that arrives while many sessions have a message to handle is handled within the
share, not after every one of them."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.loopshare import URGENT, LoopShare, urgent

SESSIONS = 60
WORK_S = 0.0004  # what handling one message costs (the gateway: tens of µs; here larger, to be measurable)


def _work() -> None:
    end = time.perf_counter() + WORK_S
    while time.perf_counter() < end:  # CPU work, as parsing and forwarding a message is
        pass


async def _burst(share: LoopShare | None, message: str = '{"type":"response.audio.delta","delta":"AAAA"}'
                 ) -> tuple[int, int]:
    """SESSIONS sessions receive a message at once over loopback, and a caller frame arrives on its own
    socket just after the first is handled. Returns (messages handled before the caller frame was,
    messages in all)."""
    handled: list[str] = []
    caller_at: list[int] = []
    go = asyncio.Event()

    async def session(reader: asyncio.StreamReader) -> None:
        data = await reader.readexactly(len(message))
        if share is not None and share.over(data.decode()):
            await share.wait(data.decode())
        _work()
        handled.append("vl")
        if len(handled) == 1:
            go.set()

    async def caller(reader: asyncio.StreamReader) -> None:
        await reader.readexactly(1)
        caller_at.append(len(handled))

    servers, writers, tasks = [], [], []
    connected = asyncio.Event()

    async def accept(target: list[asyncio.StreamReader]) -> asyncio.AbstractServer:
        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            target.append(reader)
            writers.append(writer)
            if len(writers) == SESSIONS + 1:
                connected.set()
        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        servers.append(server)
        return server

    session_readers: list[asyncio.StreamReader] = []
    caller_readers: list[asyncio.StreamReader] = []
    vl_server = await accept(session_readers)
    phone_server = await accept(caller_readers)
    clients = []
    for _ in range(SESSIONS):
        clients.append(await asyncio.open_connection(*vl_server.sockets[0].getsockname()[:2]))
    phone = await asyncio.open_connection(*phone_server.sockets[0].getsockname()[:2])
    await connected.wait()
    try:
        tasks = [asyncio.create_task(session(r)) for r in session_readers]
        tasks.append(asyncio.create_task(caller(caller_readers[0])))
        for _, writer in clients:
            writer.write(message.encode())
        await go.wait()  # the first message is being handled: the caller's frame arrives now
        phone[1].write(b"x")
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        for _, writer in [*clients, phone]:
            writer.close()
        for writer in writers:
            writer.close()
        for server in servers:
            server.close()
    return caller_at[0], len(handled)


async def test_a_caller_frame_waits_for_every_session_without_a_share() -> None:
    before, total = await _burst(None)
    assert total == SESSIONS
    assert before >= SESSIONS - 5  # the control: without a share it waits for (nearly) all of them


async def test_a_caller_frame_is_handled_within_the_share() -> None:
    # room for about five messages of WORK_S; no cap on a message's wait (its own test below): on a
    # loaded machine a 20 ms cap would let every waiting message go in one pass
    share = LoopShare(budget_s=0.002, max_wait_s=10.0)
    before, total = await _burst(share)
    assert total == SESSIONS  # every session's message was handled
    # not after all 60: the frame is read in the pass after it was written, and handled before the
    # sessions' messages of the pass after that (each pass: about six, the share and one beyond it)
    assert before <= SESSIONS // 2, before
    assert share.deferred > 0


async def test_barge_in_is_never_held_back() -> None:
    share = LoopShare(budget_s=0.002)
    message = '{"type":' + URGENT + ',"audio_start_ms":0,"item_id":"i"}'
    _, total = await _burst(share, message)
    assert total == SESSIONS and share.deferred == 0


async def test_each_pass_handles_a_message_and_the_share_renews() -> None:
    share = LoopShare(budget_s=0.0)
    assert not share.over("a")  # the first message of a pass goes, however small the share
    assert share.over("b")
    assert share.deferred == 1
    await share.wait("b")  # the next pass: "b" is its first message, and goes
    assert share.deferred == 1
    assert share.over("c")  # and takes that pass's share
    assert share.deferred == 2


async def test_sessions_waiting_in_line_are_served_first_come_first_served() -> None:
    share = LoopShare(budget_s=0.0)  # room for one message a pass: the line decides the order
    served: list[int] = []

    async def session(n: int) -> None:
        if share.over("m"):
            await share.wait("m")
        served.append(n)

    await asyncio.gather(*(session(n) for n in range(12)))
    assert served == list(range(12))
    assert share.deferred >= 11  # every one but the first waited (some more than once, at the head)


@pytest.mark.parametrize(("max_wait_s", "deferrals"), [(10.0, 3), (0.0, 2)])
async def test_a_message_waits_at_most_max_wait(max_wait_s: float, deferrals: int) -> None:
    share = LoopShare(budget_s=0.0, max_wait_s=max_wait_s)  # room for one message a pass
    assert not share.over("a")
    assert share.over("b") and share.over("c")
    # the next pass has room for "b" only: "c" waits another pass, unless it has waited long enough
    await asyncio.gather(share.wait("b"), share.wait("c"))
    assert share.deferred == deferrals


class _Session:
    urgent_waiting = 0


async def test_a_waiting_message_goes_as_soon_as_a_barge_in_has_arrived_behind_it() -> None:
    share = LoopShare(budget_s=0.0, max_wait_s=10.0)  # room for one message a pass, and no cap to speak of
    session = _Session()
    assert not share.over("first")
    assert share.over("delta")
    waiting = asyncio.create_task(share.wait("delta", session))
    hog = asyncio.create_task(share.wait("other", None))  # another session's message takes each pass's room
    try:
        for _ in range(3):
            await asyncio.sleep(0)  # a pass of the loop
            assert not share.over("more")  # (each pass's first message goes: the room is taken again)
        assert not waiting.done()
        session.urgent_waiting = 1  # speech_started arrived on the delta's session
        for _ in range(2):
            await asyncio.sleep(0)
        assert waiting.done()
    finally:
        for task in (waiting, hog):
            task.cancel()
        await asyncio.gather(waiting, hog, return_exceptions=True)


def test_a_barge_in_is_known_by_its_type_at_the_start_of_the_message_in_any_form() -> None:
    started = '{"type":' + URGENT + ',"event_id":"e1","audio_start_ms":0}'
    for form in (started, started.encode(), bytearray(started.encode()), memoryview(started.encode())):
        assert urgent(form), type(form)
    deep = '{"type":"conversation.item.created","item":{"id":"item_0000001","note":' + URGENT + '}}'
    assert not urgent(deep) and not urgent(deep.encode())  # the words further on are not its type
