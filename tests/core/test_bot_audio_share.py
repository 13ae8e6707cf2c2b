"""Bot audio takes a bounded share of each turn of the event loop (bursts of replies)."""

from __future__ import annotations

import asyncio
import time

from gateway.bridge import BotAudioShare


def work(seconds: float) -> float:
    """Real work on the loop (not a sleep): the time one audio delta takes."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


async def test_a_burst_of_replies_lets_what_was_waiting_run_within_the_share() -> None:
    share = BotAudioShare(budget_s=0.001)
    order: list[str] = []

    async def reader(n: int) -> None:
        if share.exhausted():
            await share.next_turn()
        share.take(work(0.0005))
        order.append(f"bot{n}")

    readers = [asyncio.create_task(reader(n)) for n in range(10)]
    asyncio.get_running_loop().call_soon(order.append, "caller")  # behind every reader in the loop's queue
    await asyncio.gather(*readers)
    assert "caller" in order[:3], order  # after about a share (1 ms) of bot audio, not after all ten
    assert [o for o in order if o != "caller"] == [f"bot{n}" for n in range(10)]  # readers keep their order


async def test_without_a_share_everything_waiting_goes_after_the_whole_burst() -> None:
    share = BotAudioShare(budget_s=1.0)  # the control: a share that a burst never uses up
    order: list[str] = []

    async def reader(n: int) -> None:
        if share.exhausted():
            await share.next_turn()
        share.take(work(0.0005))
        order.append(f"bot{n}")

    readers = [asyncio.create_task(reader(n)) for n in range(10)]
    asyncio.get_running_loop().call_soon(order.append, "caller")
    await asyncio.gather(*readers)
    assert order[-1] == "caller"


def test_a_share_spent_in_a_loop_that_is_gone_is_not_held_against_the_next() -> None:
    share = BotAudioShare(budget_s=0.001)

    loop = asyncio.new_event_loop()
    loop.call_soon(share.take, 0.01)
    loop.call_soon(loop.stop)
    loop.run_forever()  # one turn: the loop stops before the turn that gives the share back
    loop.close()
    assert share.spent >= share.budget_s

    async def check() -> bool:
        return share.exhausted()

    assert asyncio.run(check()) is False
