"""Calls the gateway places: the opening (greeting after the callee speaks or a pause; voicemail
after a machine's beep; hang-up), and instruction variables. Pure: explicit times, no sockets."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from gateway.call import Call, Hangup, SendMark, spoken_text
from gateway.config import parse_config
from gateway.core.outbound import GREET, HANG_UP, VOICEMAIL, Opening, OutboundPlan, VariableError, fill_variables

CONFIG = """
profiles:
  reminder:
    model: gpt-realtime
    instructions: "Remind {name} of the appointment at {time}."
    greeting: Hello, this is the clinic.
routes:
  default: reminder
"""

VARIABLES = (("name", "Ada"), ("time", "3 pm"))
PLAN = OutboundPlan(greeting_after_ms=1500, detect_machine=True, machine_wait_ms=6000,
                    voicemail_message="Please call the clinic back.",
                    variables=(("name", "Ada"), ("time", "3 pm")))


def ready_call(plan: OutboundPlan = PLAN) -> Call:
    config = parse_config(CONFIG, env={})
    call = Call(call_id="CA1", stream_id="MZ1", profile_name="reminder", profile=config.profiles["reminder"],
                started_at=0.0, outbound=plan)
    call.voicelive_connected(1.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 100.0)
    return call


def sent(call: Call) -> list[dict]:
    out = [json.loads(m) for m in call.to_voicelive]
    call.to_voicelive.clear()
    return out


def spoken(events: list[dict]) -> list[str | None]:
    return [spoken_text(e) for e in events if e["type"] == "response.create"]


# --- the pure opening ----------------------------------------------------------------------------

def test_opening_waits_for_the_machine_result_then_greets_a_person_who_spoke() -> None:
    opening = Opening(PLAN)
    assert opening.ready(0.0) is None
    assert opening.callee_started(200.0) is None
    assert opening.callee_spoke(900.0) is None  # spoke, but no machine result yet
    assert opening.due() == 6000.0
    assert opening.answered("human", 2500.0) == GREET
    assert opening.decide(2600.0) is None  # once


def test_opening_greets_after_the_pause_when_the_person_says_nothing() -> None:
    opening = Opening(OutboundPlan(greeting_after_ms=1500, detect_machine=False))
    assert opening.ready(0.0) is None
    assert opening.due() == 1500.0
    assert opening.decide(1499.0) is None
    assert opening.decide(1500.0) == GREET


def test_opening_does_not_greet_over_a_callee_still_speaking() -> None:
    opening = Opening(OutboundPlan(greeting_after_ms=1500, detect_machine=False))
    opening.ready(0.0)
    opening.callee_started(1000.0)
    assert opening.due() is None
    assert opening.decide(3000.0) is None
    assert opening.callee_spoke(3200.0) == GREET


def test_opening_machine_results() -> None:
    for result in ("machine_end_beep", "machine_end_silence", "machine_end_other"):
        opening = Opening(PLAN)
        opening.ready(0.0)
        assert opening.answered(result, 100.0) == VOICEMAIL
    hang_up = Opening(OutboundPlan(voicemail_message=None))
    hang_up.ready(0.0)
    assert hang_up.answered("machine_end_beep", 100.0) == HANG_UP
    fax = Opening(PLAN)
    fax.ready(0.0)
    assert fax.answered("fax", 100.0) == HANG_UP


def test_opening_treats_no_result_in_time_as_a_person() -> None:
    opening = Opening(PLAN)
    opening.ready(0.0)
    assert opening.decide(5999.0) is None
    assert opening.decide(6000.0) == GREET


def test_a_result_before_the_session_was_ready_is_kept() -> None:
    opening = Opening(OutboundPlan(answered_by="machine_end_beep", voicemail_message="Hi"))
    assert opening.ready(10.0) == VOICEMAIL


# --- the call -------------------------------------------------------------------------------------

def test_outbound_session_answers_no_turn_by_itself_and_has_its_variables() -> None:
    config = parse_config(CONFIG, env={})
    call = Call(call_id="CA1", stream_id="MZ1", profile_name="reminder", profile=config.profiles["reminder"],
                started_at=0.0, outbound=PLAN)
    call.voicelive_connected(1.0)
    update = sent(call)[0]
    assert update["session"]["instructions"] == "Remind Ada of the appointment at 3 pm."
    assert update["session"]["turn_detection"]["create_response"] is False
    assert update["session"]["turn_detection"]["interrupt_response"] is False
    assert call.direction == "outbound"


def test_person_gets_the_greeting_only_after_speaking() -> None:
    call = ready_call()
    assert spoken(sent(call)) == []  # no greeting at ready
    call.voicelive_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0}, 300.0)
    call.voicelive_event({"type": "input_audio_buffer.committed", "item_id": "u1"}, 900.0)
    assert spoken(sent(call)) == []  # no machine result yet
    call.answering_machine("human", 1200.0)
    assert spoken(sent(call)) == ["Hello, this is the clinic."]
    assert call.answered_by == "human"
    # after the greeting, a turn of the callee gets an answer from the gateway's request
    call.voicelive_event({"type": "input_audio_buffer.committed", "item_id": "u2"}, 5000.0)
    assert [e["type"] for e in sent(call)] == ["response.create"]


def test_person_who_stays_silent_gets_the_greeting_after_the_pause() -> None:
    call = ready_call(OutboundPlan(greeting_after_ms=1500, detect_machine=False, variables=VARIABLES))
    assert call.next_deadline() == 1600.0
    call.tick(1599.0)
    assert spoken(sent(call)) == []
    call.tick(1600.0)
    assert spoken(sent(call)) == ["Hello, this is the clinic."]


def test_machine_gets_the_voicemail_message_verbatim_then_a_hang_up() -> None:
    call = ready_call()
    call.voicelive_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0}, 300.0)
    call.answering_machine("machine_end_beep", 8000.0)
    assert spoken(sent(call)) == ["Please call the clinic back."]
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 8100.0)
    audio = base64.b64encode(b"\xff" * 800).decode()
    call.voicelive_event({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1", "delta": audio},
                         8200.0)
    call.voicelive_event({"type": "response.done", "response": {"id": "r1", "status": "completed"}}, 8300.0)
    assert not call.ended  # the message is still playing
    for action in list(call.to_phone):
        if isinstance(action, SendMark):
            call.playback_mark(action.name, 8400.0)
    assert call.ended and call.end_reason == "voicemail_left"
    assert any(isinstance(a, Hangup) for a in call.to_phone)


def test_machine_with_hang_up_action_hangs_up_at_once() -> None:
    call = ready_call(OutboundPlan(voicemail_message=None, variables=VARIABLES))
    call.answering_machine("machine_end_silence", 4000.0)
    assert call.ended and call.end_reason == "answering_machine"
    assert spoken(sent(call)) == []


# --- variables ------------------------------------------------------------------------------------

def test_variables_fill_placeholders_once() -> None:
    assert fill_variables("Hi {name}, {name}!", {"name": "{x}"}) == "Hi {x}, {x}!"
    assert fill_variables("No placeholders", {}) == "No placeholders"


@pytest.mark.parametrize(("variables", "problem"), [
    ({"name": "Ada"}, "missing variable 'time'"),
    ({"name": "Ada", "time": "3", "extra": "x"}, "unknown variable 'extra'"),
    ({"name": "A" * 501, "time": "3"}, "at most 500 characters"),
    ({"name": 3, "time": "3"}, "expected a string"),
])
def test_variables_that_do_not_fit_are_refused(variables: dict, problem: str) -> None:
    with pytest.raises(VariableError, match=problem):
        fill_variables("Remind {name} at {time}.", variables)


# --- the placed calls a worker keeps ------------------------------------------------------------------

def test_placed_calls_that_never_connect_stop_counting_and_ended_ones_are_forgotten() -> None:
    import time

    from gateway.config.schema import OutboundLimits
    from gateway.outbound import Outbound, PlacedState

    outbound = Outbound(OutboundLimits(calls_per_minute=60, max_per_profile=1, keep_s=60))
    outbound.calls["CA1"] = PlacedState("CA1", "phone", "p", "+15555550123", "+15555550100", OutboundPlan())
    refused = outbound.refusal("p", None, 0, 10)
    assert refused is not None and refused[0] == "at the outbound cap of profile p (1)"
    assert outbound.refusal("q", None, 0, 10) is None  # another profile
    outbound.calls["CA1"].created_at -= 1000  # placed long ago, never heard of again
    assert outbound.refusal("p", None, 0, 10) is None
    assert (outbound.calls["CA1"].state, outbound.calls["CA1"].end_reason) == ("failed", "never_connected")
    outbound.calls["CA1"].ended_at = time.time() - 61
    outbound._prune(time.time())
    assert "CA1" not in outbound.calls


def test_with_the_gateway_s_turn_detection_each_turn_is_answered_once() -> None:
    config = parse_config(CONFIG.replace("greeting: Hello, this is the clinic.",
                                         "greeting: Hello, this is the clinic.\n    turn_detection: none"), env={})
    call = Call(call_id="CA1", stream_id="MZ1", profile_name="reminder", profile=config.profiles["reminder"],
                started_at=0.0, outbound=OutboundPlan(detect_machine=False, variables=VARIABLES))
    call.voicelive_connected(1.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 100.0)
    assert sent(call)[0]["session"]["turn_detection"] is None
    call.tick(1600.0)  # a silent callee: the greeting after the pause
    assert spoken(sent(call)) == ["Hello, this is the clinic."]
    call.voicelive_event({"type": "response.created", "response": {"id": "r1"}}, 1700.0)
    call.voicelive_event({"type": "response.done", "response": {"id": "r1", "status": "completed"}}, 1800.0)
    call._end_caller_turn()  # the gateway heard the end of the callee's turn: commit, then one answer
    call.voicelive_event({"type": "input_audio_buffer.committed", "item_id": "u1"}, 3000.0)
    assert [e["type"] for e in sent(call)] == ["input_audio_buffer.commit", "response.create"]


def test_the_call_s_own_end_reason_wins_over_the_carrier_s_completed() -> None:
    from types import SimpleNamespace

    from gateway.config.schema import OutboundLimits
    from gateway.outbound import Outbound, PlacedState

    outbound = Outbound(OutboundLimits())
    outbound.calls["CA1"] = PlacedState("CA1", "phone", "p", "+15555550123", "+15555550100", OutboundPlan())
    assert outbound.plan_for("CA1") is not None and outbound.calls["CA1"].state == "in-progress"
    outbound.status("CA1", "completed", "hung_up", carrier="phone")  # the carrier's word came first
    outbound.ended(SimpleNamespace(call_id="CA1", end_reason="voicemail_left", answered_by="machine_end_beep"))  # type: ignore[arg-type]
    placed = outbound.calls["CA1"]
    assert (placed.state, placed.end_reason, placed.answered_by) == ("completed", "voicemail_left", "machine_end_beep")


def test_a_late_progress_callback_does_not_take_a_live_call_back_to_ringing() -> None:
    """Carriers' callbacks are separate HTTP requests and may arrive out of order: a "ringing" that
    comes after the media started must not make the live call count twice towards max_calls, nor
    have it declared never connected."""
    from gateway.config.schema import OutboundLimits
    from gateway.outbound import Outbound, PlacedState

    outbound = Outbound(OutboundLimits(calls_per_minute=60))
    outbound.calls["CA1"] = PlacedState("CA1", "phone", "p", "+15555550123", "+15555550100", OutboundPlan())
    outbound.plan_for("CA1")  # its media started: one of the worker's active calls
    outbound.status("CA1", "ringing", carrier="phone")
    outbound.status("CA1", "queued", carrier="phone")
    assert outbound.calls["CA1"].state == "in-progress"
    assert outbound.refusal("q", None, 1, 2) is None  # one live call (its bridge) of two
    outbound.calls["CA1"].created_at -= 1000
    outbound._prune(outbound.calls["CA1"].created_at + 2000)
    assert outbound.calls["CA1"].state == "in-progress"


def test_a_callback_of_another_carrier_does_not_touch_a_placed_call() -> None:
    """Each carrier's callbacks are signed by that carrier only: one cannot change (or connect) a
    call another carrier placed, even with its id."""
    from gateway.config.schema import OutboundLimits
    from gateway.outbound import Outbound, PlacedState

    outbound = Outbound(OutboundLimits())
    outbound.calls["CA1"] = PlacedState("CA1", "phone", "p", "+15555550123", "+15555550100", OutboundPlan())
    assert outbound.placed("CA1", "other") is None and outbound.placed("CA1", "phone") is outbound.calls["CA1"]
    outbound.status("CA1", "completed", "hung_up", carrier="other")
    assert outbound.answered("CA1", "machine_end_beep", carrier="other") is None
    placed = outbound.calls["CA1"]
    assert (placed.state, placed.answered_by, placed.plan.answered_by) == ("queued", None, None)
    assert outbound.answered("CA1", "human", carrier="phone") is placed and placed.plan.answered_by == "human"


def test_a_late_answering_machine_result_does_not_rewrite_an_ended_call() -> None:
    from types import SimpleNamespace

    from gateway.config.schema import OutboundLimits
    from gateway.outbound import Outbound, PlacedState

    outbound = Outbound(OutboundLimits())
    outbound.calls["CA1"] = PlacedState("CA1", "phone", "p", "+15555550123", "+15555550100", OutboundPlan())
    outbound.plan_for("CA1")
    outbound.ended(SimpleNamespace(call_id="CA1", end_reason="bot_hung_up", answered_by="human"))  # type: ignore[arg-type]
    assert outbound.answered("CA1", "machine_end_beep", carrier="phone") is outbound.calls["CA1"]
    assert outbound.calls["CA1"].answered_by == "human"


# --- places in max_calls ---------------------------------------------------------------------------

def gateway_with(max_calls: int) -> tuple[Any, Any]:
    """A gateway's context with ``max_calls`` (no sockets: only its counting is used) and a way to
    place calls in it as the API does."""
    from gateway.bridge import GatewayContext
    from gateway.outbound import PlacedState

    config = parse_config(CONFIG + f"gateway: {{max_calls: {max_calls}}}\n", env={})
    ctx = GatewayContext(config, pool=None, tokens=None)  # type: ignore[arg-type]

    def place(call_id: str, carrier: str = "phone") -> PlacedState:
        placed = PlacedState(call_id, carrier, "reminder", "+15555550123", "+15555550100", OutboundPlan())
        ctx.outbound.calls[call_id] = placed
        return placed

    return ctx, place


def start_media(ctx: Any, call_id: str) -> None:
    """A call's media started: it learns its plan and is one of the worker's calls."""
    ctx.call_options(call_id)
    ctx.calls[call_id] = object()


def test_a_ringing_placed_call_holds_its_place_against_incoming_calls() -> None:
    ctx, place = gateway_with(max_calls=1)
    assert ctx.refusal() is None
    place("CA1")
    for state in ("queued", "ringing", "answered"):
        ctx.outbound.status("CA1", state, carrier="phone")
        assert ctx.refusal() == "at max_calls"  # an incoming call (its webhook) is refused
        assert ctx.media_refusal("phone", "CA9") == "at max_calls"  # the stream of another call too
        assert ctx.media_refusal("other", None) == "at max_calls"  # (another carrier's stream is never its)
        # the placed call's own stream takes the place it holds, also before it says which call it is
        assert ctx.media_refusal("phone", "CA1") is None and ctx.media_refusal("phone", None) is None
    assert ctx.outbound.refusal("reminder", None, len(ctx.calls), 1) is not None  # and another placed call


def test_a_placed_call_whose_media_runs_counts_once() -> None:
    ctx, place = gateway_with(max_calls=2)
    place("CA1")
    place("CA2")
    assert ctx.refusal() == "at max_calls"
    start_media(ctx, "CA1")
    assert ctx.outbound.calls["CA1"].state == "in-progress"
    assert ctx.refusal() == "at max_calls"  # CA1 runs, CA2 rings: two places, not three
    assert ctx.media_refusal("phone", "CA2") is None
    ctx.outbound.status("CA2", "failed", "no_answer", carrier="phone")
    assert ctx.refusal() is None  # one call running of two
    # a call among the running ones is counted there, whatever its placed state says
    ctx.outbound.calls["CA1"].state = "answered"
    assert ctx.refusal() is None


@pytest.mark.parametrize("end", ["no_answer", "busy", "failed", "canceled", "completed_before_media",
                                 "never_connected", "forgotten", "media_ended"])
def test_every_end_of_a_placed_call_frees_its_place(end: str) -> None:
    import time

    ctx, place = gateway_with(max_calls=1)
    placed = place("CA1")
    ctx.outbound.status("CA1", "ringing", carrier="phone")
    assert ctx.refusal() == "at max_calls"
    if end in ("no_answer", "busy", "failed", "canceled"):  # the carrier's status callback
        ctx.outbound.status("CA1", "failed", end, carrier="phone")
    elif end == "completed_before_media":  # a machine answered, then the carrier hung up before any media
        ctx.outbound.status("CA1", "answered", carrier="phone")
        ctx.outbound.answered("CA1", "machine_end_beep", carrier="phone")
        assert ctx.refusal() == "at max_calls"
        ctx.outbound.status("CA1", "completed", "completed", carrier="phone")
    elif end == "never_connected":  # no media and no word from the carrier for too long
        placed.created_at -= 1000
    elif end == "forgotten":
        placed.state, placed.ended_at = "completed", time.time() - 10_000
        assert ctx.refusal() is None
        assert "CA1" not in ctx.outbound.calls
    else:  # its media ran and ended
        from types import SimpleNamespace

        start_media(ctx, "CA1")
        assert ctx.refusal() == "at max_calls"
        del ctx.calls["CA1"]
        ctx.outbound.ended(SimpleNamespace(call_id="CA1", end_reason="caller_hung_up", answered_by=None))
    assert ctx.refusal() is None


def test_a_call_being_placed_holds_a_place_too() -> None:
    ctx, _place = gateway_with(max_calls=1)
    ctx.outbound.placing_profiles.append("reminder")  # the carrier's API has not answered yet
    assert ctx.refusal() == "at max_calls"
    ctx.outbound.placing_profiles.remove("reminder")
    assert ctx.refusal() is None


# --- answering-machine results in the gateway's words ------------------------------------------------

DOCUMENTED = ("human", "machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax",
              "unknown")


def test_twilio_s_answered_by_values_map_to_the_gateway_s_results() -> None:
    from structlog.testing import capture_logs

    from gateway.carriers.twilio.outbound import answered_by
    from gateway.core.outbound import ANSWERED_BY

    with capture_logs() as logs:
        for value in DOCUMENTED:
            assert answered_by({"AnsweredBy": value}, "CA1") == value and value in ANSWERED_BY
    assert logs == []  # documented values are no surprise
    long = "machine_end_whistle" + "x" * 5000
    for form in ({"AnsweredBy": "Machine_End_Beep"}, {"AnsweredBy": long}, {"AnsweredBy": ""}, {}):
        with capture_logs() as logs:
            assert answered_by(form, "CA1") == "unknown"
        (line,) = logs
        assert line["log_level"] == "warning" and line["call_id"] == "CA1"
        shown = line["answered_by"]
        assert shown is None if "AnsweredBy" not in form else len(shown) <= 43 and long not in shown


def test_a_result_the_gateway_does_not_know_never_reaches_the_call_as_it_came() -> None:
    import asyncio

    from structlog.testing import capture_logs

    ctx, place = gateway_with(max_calls=1)
    placed = place("CA1")
    with capture_logs() as logs:
        assert asyncio.run(ctx.answering_machine("CA1", "machine_" + "y" * 3000, carrier="phone")) is True
    assert placed.answered_by == "unknown" and placed.plan.answered_by == "unknown"
    assert all(len(str(v)) <= 100 for line in logs for v in line.values())
    for value in DOCUMENTED:
        assert asyncio.run(ctx.answering_machine("CA1", value, carrier="phone")) is True
        assert placed.answered_by == value
