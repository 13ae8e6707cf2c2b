"""The post-call record, built without sockets: transcripts as heard, usage sums, tools, sessions,
and the masking of numbers, digits said aloud and secrets."""

from __future__ import annotations

import base64
import errno
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import metrics, webhooks
from gateway.call import Call, SendMark
from gateway.config import ConfigError, parse_config
from gateway.core.masking import DIGITS_MASK, mask_digit_runs, mask_number
from gateway.core.memory import heard_words
from gateway.core.outbound import OutboundPlan
from gateway.core.usage import Usage
from gateway.log import register_secret
from gateway.records import CallEvents, RecordOptions, build_record
from gateway.webhooks import Spool, backoff_s

CONFIG = """
profiles:
  main:
    model: gpt-realtime
    tools:
      - name: lookup
        description: Look up an order.
        parameters: {type: object, properties: {order: {type: string}}}
        http: {url: https://tools.example.com/lookup}
      - {name: hang_up, builtin: hang_up}
routes:
  default: main
"""
ZERO_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z: the wall-clock time of the call's clock zero


def b64(n: int) -> str:
    return base64.b64encode(b"\x55" * n).decode()


def usage(inp: int, out: int, in_audio: int, in_text: int, out_audio: int, out_text: int,
          cached: int = 0) -> dict:
    return {"total_tokens": inp + out, "input_tokens": inp, "output_tokens": out,
            "input_token_details": {"cached_tokens": cached, "text_tokens": in_text, "audio_tokens": in_audio,
                                    "image_tokens": 0,
                                    "cached_tokens_details": {"text_tokens": cached, "audio_tokens": 0}},
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio, "reasoning_tokens": 0}}


def a_call(caller: str | None = "+14155550123", called: str | None = "+18005550100",
           **options: Any) -> tuple[Call, CallEvents]:
    config = parse_config(CONFIG, env={})
    events = CallEvents()
    call = Call(call_id="CA1", stream_id="MZ1", piece_ms=60, profile_name="main", profile=config.profiles["main"],
                started_at=0.0, observer=events, caller=caller, called=called, **options)
    call.voicelive_connected(10.0)
    call.voicelive_event({"type": "session.created", "session": {"id": "sess_1"}}, 20.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 30.0)
    return call, events


def caller_says(call: Call, item: str, text: str, now: float) -> None:
    call.voicelive_event({"type": "conversation.item.created", "item": {
        "id": item, "type": "message", "role": "user"}}, now)
    call.voicelive_event({"type": "conversation.item.input_audio_transcription.completed", "item_id": item,
                          "content_index": 0, "transcript": text}, now + 5)


def bot_says(call: Call, rid: str, item: str, text: str, nbytes: int, now: float, used: dict | None = None,
             ack_pieces: int | None = None, interrupt_at: float | None = None) -> None:
    call.voicelive_event({"type": "response.created", "response": {"id": rid, "status": "in_progress"}}, now)
    call.voicelive_event({"type": "response.output_item.added", "response_id": rid, "item": {
        "id": item, "type": "message", "role": "assistant"}}, now)
    call.voicelive_event({"type": "response.audio.delta", "response_id": rid, "item_id": item, "output_index": 0,
                          "content_index": 0, "delta": b64(nbytes)}, now + 1)
    marks = [a.name for a in call.to_phone if isinstance(a, SendMark)]
    call.to_phone.clear()
    if ack_pieces is not None:
        call.playback_mark(marks[ack_pieces - 1], now + 300)
    if interrupt_at is not None:
        call.voicelive_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0,
                              "item_id": "x"}, interrupt_at)
    call.voicelive_event({"type": "response.audio_transcript.done", "response_id": rid, "item_id": item,
                          "output_index": 0, "content_index": 0, "transcript": text}, now + 400)
    status = "cancelled" if interrupt_at is not None else "completed"
    call.voicelive_event({"type": "response.done", "response": {"id": rid, "status": status, "usage": used}},
                         now + 410)
    for marks_left in marks:
        call.playback_mark(marks_left, now + 2000)


def record_of(call: Call, events: CallEvents, **options: object) -> dict:
    record = build_record(call, events.events, record_id="rec_1", carrier="twilio", clock_zero_s=ZERO_S,
                          options=RecordOptions(**options))  # type: ignore[arg-type]
    json.dumps(record)  # a record is plain JSON
    return record


def test_the_transcript_is_what_the_caller_heard_and_the_bot_turn_is_cut_at_the_barge_in() -> None:
    call, events = a_call()
    caller_says(call, "item_u1", "When are you open?", 100.0)
    ten_words = "We are open from nine to five every weekday and Saturdays"
    # one second of audio (8000 bytes); the phone played 5 pieces of 60 ms, then the caller spoke 25 ms later
    bot_says(call, "resp_1", "item_b1", ten_words, 8000, 1000.0, used=usage(100, 50, 80, 20, 40, 10),
             ack_pieces=5, interrupt_at=1325.0)
    caller_says(call, "item_u2", "And on Sundays?", 1500.0)
    bot_says(call, "resp_2", "item_b2", "Closed on Sundays.", 1600, 3000.0, used=usage(150, 30, 120, 30, 25, 5, 60))
    call.phone_ended("caller_hung_up", 6000.0)
    record = record_of(call, events)
    turns = record["transcript"]
    assert [(t["role"], t["text"]) for t in turns] == [
        ("caller", "When are you open?"),
        ("bot", heard_words(ten_words, 325 / 1000)),
        ("caller", "And on Sundays?"),
        ("bot", "Closed on Sundays."),
    ]
    assert turns[1]["text"] == "We are open" and turns[1]["interrupted"] is True and turns[1]["heard_ms"] == 325
    assert "interrupted" not in turns[3] and turns[0]["at_ms"] == 100
    (barge,) = record["barge_ins"]
    assert barge["item_id"] == "item_b1" and barge["heard_ms"] == 325 and barge["received_ms"] == 1000
    # usage: the two responses added up, detail by detail
    assert record["usage"]["input_tokens"] == 250 and record["usage"]["output_tokens"] == 80
    assert record["usage"]["total_tokens"] == 330 and record["usage"]["responses"] == 2
    assert record["usage"]["input_token_details"]["audio_tokens"] == 200
    assert record["usage"]["input_token_details"]["cached_tokens"] == 60
    assert record["usage"]["input_token_details"]["cached_tokens_details"]["text_tokens"] == 60
    assert record["usage"]["output_token_details"] == {"text_tokens": 15, "audio_tokens": 65, "reasoning_tokens": 0}
    assert call.usage.by_kind()["output_audio"] == 65
    # the rest of the record
    assert record["id"] == "rec_1" and record["call_id"] == "CA1" and record["carrier"] == "twilio"
    assert record["direction"] == "inbound" and record["profile"] == "main" and record["answering_machine"] is None
    assert record["outcome"] == "completed" and record["end_reason"] == "caller_hung_up"
    assert record["started_at"] == "2026-01-01T00:00:00.000Z" and record["ended_at"] == "2026-01-01T00:00:06.000Z"
    assert record["clock_ms"] == {"started": 0, "answered": 0, "ready": 30, "ended": 6000}
    assert record["duration_ms"] == 6000
    (session,) = record["voicelive"]["sessions"]
    assert session["id"] == "sess_1" and session["connected_ms"] == 10 and session["ready_ms"] == 30
    assert record["voicelive"]["reconnects"] == 0


def test_tools_keys_and_transfers_are_in_the_record_with_durations_and_outcomes() -> None:
    call, events = a_call()
    for digit in "1234#":  # a PIN, entered with the finish key
        call.dtmf(digit, 100.0)
    call.voicelive_event({"type": "response.created", "response": {"id": "resp_t", "status": "in_progress"}}, 200.0)
    for n, name in enumerate(["lookup", "nope"]):
        call.voicelive_event({"type": "response.function_call_arguments.done", "response_id": "resp_t",
                              "item_id": f"fc_{n}", "call_id": f"call_{n}", "name": name,
                              "arguments": '{"order": "A1"}'}, 250.0)
    call.tool_result("call_0", json.dumps({"error": "the lookup service did not answer"}), 1250.0)
    call.phone_ended("caller_hung_up", 2000.0)
    record = record_of(call, events, mask_digits=False)
    tools = {t["name"]: t for t in record["tools"]}
    assert tools["lookup"]["duration_ms"] == 1000 and tools["lookup"]["outcome"] == "error"
    assert tools["nope"]["outcome"] == "refused" and tools["nope"]["duration_ms"] == 0
    assert record["keys"]["pressed"] == 5 and record["keys"]["digits"] == "1234#"
    assert record["keys"]["entries"] == [{"at_ms": 100, "keys": 5}]
    (entry,) = record["transcript"]
    assert entry["role"] == "caller" and entry["keys"] is True and "1 2 3 4" in entry["text"]
    assert record["transfers"] == []
    masked = record_of(call, events)
    assert "digits" not in masked["keys"] and masked["keys"]["pressed"] == 5
    assert masked["transcript"][0]["text"] == "[The caller pressed 5 keys on the phone keypad]"
    assert not any(digit in masked["transcript"][0]["text"] for digit in "1234")


def test_a_sessions_loss_and_reconnect_are_listed() -> None:
    call, events = a_call()
    call.reconnect_budget_ms = 5000.0
    call.sessions.reconnect_budget_ms = 5000.0
    call.voicelive_closed(1011, 1000.0)
    call.voicelive_connected(1100.0)
    call.voicelive_event({"type": "session.created", "session": {"id": "sess_2"}}, 1150.0)
    call.voicelive_event({"type": "session.updated", "session": {
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}, 1200.0)
    call.phone_ended("caller_hung_up", 3000.0)
    record = record_of(call, events)
    first, second = record["voicelive"]["sessions"]
    assert first["id"] == "sess_1" and first["ended_ms"] == 1000 and first["close_code"] == 1011
    assert second["id"] == "sess_2" and second["connected_ms"] == 1100 and second["ready_ms"] == 1200


def test_numbers_are_masked_unless_the_profile_opts_out_and_secrets_never_appear() -> None:
    register_secret("sk-live-records-test-secret-0001")
    call, events = a_call()
    caller_says(call, "item_u1", "my card is 4111 1111 1111 1111 and key sk-live-records-test-secret-0001", 100.0)
    caller_says(call, "item_u2", "call me on 415-555-0123, I have 2 dogs", 200.0)
    call.phone_ended("caller_hung_up", 1000.0)
    record = record_of(call, events)
    assert record["from"] == "+*******0123" and record["to"] == "+*******0100"
    texts = [t["text"] for t in record["transcript"]]
    assert texts == [f"my card is {DIGITS_MASK} and key ***", f"call me on {DIGITS_MASK}, I have 2 dogs"]
    body = json.dumps(record)
    assert "sk-live-records-test-secret-0001" not in body and "4111" not in body and "5550123" not in body
    plain = record_of(call, events, mask_numbers=False, mask_digits=False)
    assert plain["from"] == "+14155550123" and plain["to"] == "+18005550100"
    assert plain["transcript"][0]["text"].startswith("my card is 4111 1111 1111 1111 and key ***")


def test_a_call_without_numbers_or_a_session_still_has_a_record() -> None:
    config = parse_config(CONFIG, env={})
    events = CallEvents()
    call = Call(call_id="CA2", stream_id="MZ2", piece_ms=60, profile_name="main", profile=config.profiles["main"],
                started_at=0.0, observer=events)
    call.voicelive_failed("voicelive_unavailable", 500.0)
    record = build_record(call, events.events, record_id="rec_2", carrier="acs", clock_zero_s=ZERO_S, failed=True)
    assert record["from"] is None and record["to"] is None and record["transcript"] == []
    assert record["outcome"] == "failed" and record["end_reason"] == "voicelive_unavailable"
    assert record["usage"]["total_tokens"] == 0 and record["voicelive"]["sessions"] == []


def test_the_outbound_side_s_answering_machine_result_and_direction_are_read() -> None:
    call, events = a_call(outbound=OutboundPlan(voicemail_message="Sorry we missed you."))
    call.answered_at = 250.0
    call.answering_machine("machine_end_beep", 250.0)
    call.phone_ended("caller_hung_up", 1000.0)
    record = record_of(call, events)
    assert record["direction"] == "outbound" and record["answering_machine"] == "machine_end_beep"
    assert record["outcome"] == "answering_machine" and record["clock_ms"]["answered"] == 250


# --- usage ------------------------------------------------------------------------------------


def test_usage_ignores_what_is_not_a_count() -> None:
    total = Usage()
    total.add(None)
    total.add("usage")
    total.add({"input_tokens": "12", "output_tokens": -3, "total_tokens": True,
               "input_token_details": {"audio_tokens": 7, "text_tokens": 1.5},
               "output_token_details": "audio"})
    assert total.responses == 1
    assert total.counts["input_tokens"] == 0 and total.counts["output_tokens"] == 0
    assert total.by_kind()["input_audio"] == 7 and total.by_kind()["input_text"] == 0


@given(st.lists(st.tuples(*(st.integers(0, 10_000) for _ in range(6))), max_size=20))
def test_usage_is_the_sum_of_every_response(responses: list[tuple[int, ...]]) -> None:
    total = Usage()
    for inp, out, ia, it, oa, ot in responses:
        total.add(usage(inp, out, ia, it, oa, ot))
    summed = total.as_dict()
    assert summed["input_tokens"] == sum(r[0] for r in responses)
    assert summed["output_token_details"]["audio_tokens"] == sum(r[4] for r in responses)
    assert summed["total_tokens"] == sum(r[0] + r[1] for r in responses)


# --- masking ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "masked"), [
    ("1234567", "1234567"),
    ("12345678", DIGITS_MASK),
    ("1 2 3 4 5 6 7 8", DIGITS_MASK),
    ("4111-1111-1111-1111 thanks", f"{DIGITS_MASK} thanks"),
    ("(415) 555-0100", DIGITS_MASK),
    ("+1 415 555 0100.", f"{DIGITS_MASK}."),
    ("room 12, floor 3, 2024", "room 12, floor 3, 2024"),
    ("1234 then 5678", "1234 then 5678"),
    ("two runs 12345678 and 87654321", f"two runs {DIGITS_MASK} and {DIGITS_MASK}"),
    ("", ""),
])
def test_digit_runs_of_eight_or_more_are_masked(text: str, masked: str) -> None:
    assert mask_digit_runs(text) == masked


def test_the_shortest_masked_run_is_a_setting() -> None:
    assert mask_digit_runs("PIN 1234", min_digits=4) == f"PIN {DIGITS_MASK}"
    assert mask_digit_runs("PIN 123", min_digits=4) == "PIN 123"


@given(st.text(alphabet=st.sampled_from("0123456789 -\u2013.()+abc,"), max_size=60), st.integers(2, 12))
def test_no_run_as_long_as_the_minimum_survives_masking(text: str, min_digits: int) -> None:
    masked = mask_digit_runs(text, min_digits)
    runs = re.findall(r"\d(?:[\s\-\u2013.,()]*\d)*", masked)
    assert all(len(re.findall(r"\d", run)) < min_digits for run in runs)
    assert mask_digit_runs(masked, min_digits) == masked
    if len(re.findall(r"\d", text)) < min_digits:
        assert masked == text


@pytest.mark.parametrize(("number", "masked"), [
    ("+14155550123", "+*******0123"),
    ("tel:+14155550123", "+*******0123"),
    ("4155550123", "******0123"),
    ("0123", "****"),
    ("sip:alice@example.com", "***"),
    ("anonymous", "***"),
    (None, None),
])
def test_numbers_keep_only_their_last_four_digits(number: str | None, masked: str | None) -> None:
    assert mask_number(number) == masked


# --- configuration ----------------------------------------------------------------------------

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def test_records_need_a_secret_from_the_environment_and_a_spool() -> None:
    text = CONFIG.replace("profiles:", "records:\n  webhook: https://hooks.example.com/calls\nprofiles:", 1)
    with pytest.raises(ConfigError) as err:
        parse_config(text, env={})
    problems = "\n".join(err.value.problems)
    assert "records.signing_secret: required when records are delivered (records.webhook is set)" in problems
    assert "records.spool_directory: required" in problems
    literal = text.replace("records:\n", f"records:\n  signing_secret: {SECRET}\n  spool_directory: /tmp/s\n")
    with pytest.raises(ConfigError, match="secrets come from the environment only"):
        parse_config(literal, env={})
    good = text.replace("records:\n", "records:\n  signing_secret: ${S}\n  spool_directory: /tmp/s\n")
    config = parse_config(good, env={"S": SECRET})
    assert config.record_webhook(config.profiles["main"]) == "https://hooks.example.com/calls"
    assert SECRET in config.secrets()
    with pytest.raises(ConfigError, match="expected a Standard Webhooks secret") as err:
        parse_config(good, env={"S": "not-a-webhook-secret"})
    assert "not-a-webhook-secret" not in str(err.value)


def test_a_profile_names_its_own_webhook_and_masking_or_opts_out() -> None:
    text = CONFIG.replace("    model: gpt-realtime\n", "    model: gpt-realtime\n    record: {webhook: "
                          "https://crm.example.com/hook, mask_numbers: false, min_digits: 12}\n  off:\n"
                          "    model: gpt-realtime\n    record: {enabled: false}\n", 1)
    text = text.replace("profiles:", "records:\n  signing_secret: ${S}\n  spool_directory: /tmp/s\nprofiles:", 1)
    config = parse_config(text, env={"S": SECRET})
    main = config.profiles["main"]
    assert config.record_webhook(main) == "https://crm.example.com/hook"
    assert main.record.mask_numbers is False and main.record.mask_digits is True and main.record.min_digits == 12
    assert config.record_webhook(config.profiles["off"]) is None
    with pytest.raises(ConfigError, match=r"profiles\.main\.record\.mask_numbers: "):
        parse_config(text.replace("mask_numbers: false", "mask_numbers: sometimes"), env={"S": SECRET})


@pytest.mark.parametrize(("text", "masked"), [
    ("4, 1, 1, 1, 5, 5, 5, 0, 1, 0, 0", DIGITS_MASK),  # digits said one by one, as a transcription writes them
    ("my card is 4111, 1111, 1111, 1111.", f"my card is {DIGITS_MASK}."),
    ("4111\u20131111\u20131111\u20131111", DIGITS_MASK),  # en dashes
    ("415\u2011555\u20110100 ok", f"{DIGITS_MASK} ok"),  # non-breaking hyphens
])
def test_digit_runs_are_masked_whatever_separates_their_digits(text: str, masked: str) -> None:
    assert mask_digit_runs(text) == masked



@pytest.mark.parametrize(("text", "masked"), [
    ("(call 12345678) today", f"(call {DIGITS_MASK}) today"),
    ("the reference (12345678", f"the reference ({DIGITS_MASK}"),
    ("(12345678)", DIGITS_MASK),
    ("(415) 555-0100", DIGITS_MASK),
])
def test_masking_keeps_the_brackets_of_the_text_around_a_number(text: str, masked: str) -> None:
    assert mask_digit_runs(text) == masked


# --- the spool ----------------------------------------------------------------------------------

def test_a_spool_write_that_fails_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk: the write fails with a clear OSError, and no part of the record stays on disk."""
    spool = Spool(tmp_path / "spool")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(webhooks.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        spool.write("rec_a", "http://127.0.0.1:9/calls", b'{"from":"+14155550123"}')
    assert list(spool.directory.iterdir()) == []


def test_the_backoff_doubles_up_to_its_cap_however_many_attempts_are_allowed() -> None:
    assert [backoff_s(n, 2.0, 300.0) for n in (1, 2, 3, 8, 9, 12)] == [2.0, 4.0, 8.0, 256.0, 300.0, 300.0]
    assert backoff_s(1100, 2.0, 300.0) == 300.0  # (2 ** 1099 is too large for a float)


def test_a_secret_with_digits_in_it_is_scrubbed_whole_before_the_digits_are_masked() -> None:
    register_secret("key-20250101123456-records-tail")
    call, events = a_call()
    caller_says(call, "item_u1", "the key is key-20250101123456-records-tail, thanks", 100.0)
    call.phone_ended("caller_hung_up", 1000.0)
    record = record_of(call, events)
    assert [t["text"] for t in record["transcript"]] == ["the key is ***, thanks"]
    assert "records-tail" not in json.dumps(record)


def test_a_count_too_large_to_be_tokens_counts_nothing_and_the_metrics_take_the_sums() -> None:
    """JSON allows an integer of any size; the token metrics (floats) must still take what a call counted."""
    total = Usage()
    total.add({"input_tokens": 10 ** 400, "output_tokens": 5,
               "input_token_details": {"audio_tokens": 10 ** 400, "text_tokens": 3}})
    assert total.counts["input_tokens"] == 0 and total.counts["output_tokens"] == 5
    assert total.by_kind()["input_audio"] == 0 and total.by_kind()["input_text"] == 3
    for kind, tokens in total.by_kind().items():
        metrics.TOKENS.inc(kind, amount=tokens)  # as the end of a call does
    json.dumps(total.as_dict())


def test_a_claim_from_another_pid_namespace_under_the_same_hostname_is_not_taken_for_a_dead_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Containers with host networking share the hostname, not their pids: a pid of theirs that does
    not exist here is no sign that their worker is gone (releasing its claim would deliver twice)."""
    namespace = "pid:[4026530001]"
    monkeypatch.setattr(webhooks.os, "readlink", lambda path: namespace)
    monkeypatch.setattr(webhooks.os, "getpid", lambda: 4_194_305)  # above any pid_max: no such process here
    theirs = Spool(tmp_path / "spool")
    theirs.write("rec_a", "http://127.0.0.1:9/calls", b"{}")
    claimed = theirs.claim(theirs.directory / "rec_a.json")
    assert claimed is not None
    namespace = "pid:[4026530002]"
    monkeypatch.undo()
    monkeypatch.setattr(webhooks.os, "readlink", lambda path: namespace)
    ours = Spool(tmp_path / "spool")
    assert ours.waiting() == []
    assert [p.name for p in ours.directory.iterdir()] == [claimed.name]


def test_a_spooled_file_whose_body_cannot_be_posted_is_not_a_spooled_record(tmp_path: Path) -> None:
    """A damaged file (a lone surrogate, which JSON allows and a POST's bytes cannot hold) is one the
    spool cannot read, left in place and reported, not an exception that ends the delivering task."""
    spool = Spool(tmp_path / "spool")
    damaged = spool.directory / "rec_a.json"
    damaged.write_text('{"id": "rec_a", "webhook": "http://127.0.0.1:9/calls", "body": "\\udcff"}')
    with pytest.raises(ValueError, match="not a spooled record"):
        spool.read(damaged)


def test_only_the_tool_that_ended_the_call_finishes_with_it() -> None:
    """A lookup still running when the bot hangs up did not end the call: it stays unfinished."""
    call, events = a_call()
    call.voicelive_event({"type": "response.created", "response": {"id": "resp_t", "status": "in_progress"}}, 200.0)
    for n, name in enumerate(["lookup", "hang_up"]):
        call.voicelive_event({"type": "response.function_call_arguments.done", "response_id": "resp_t",
                              "item_id": f"fc_{n}", "call_id": f"call_{n}", "name": name, "arguments": "{}"},
                             250.0 + n)
    call.tick(30_000.0)  # no goodbye came: the call ends anyway
    assert call.end_reason == "bot_hung_up"
    tools = {t["name"]: t["outcome"] for t in record_of(call, events)["tools"]}
    assert tools == {"lookup": "unfinished", "hang_up": "ended_call"}


# --- a bot turn cut where the caller stopped hearing it ---------------------------------------------------

# (ten and twenty words that say no digits: a bot reading out ten number words would be masked)
TEN = "alpha bravo charlie delta echo foxtrot golf hotel india juliet"
TWENTY = TEN + " kilo lima mike november oscar papa quebec romeo sierra tango"


def start_response(call: Call, rid: str, item: str, now: float) -> None:
    call.voicelive_event({"type": "response.created", "response": {"id": rid, "status": "in_progress"}}, now)
    call.voicelive_event({"type": "response.output_item.added", "response_id": rid, "item": {
        "id": item, "type": "message", "role": "assistant"}}, now)


def audio(call: Call, rid: str, item: str, nbytes: int, now: float) -> list[str]:
    """Bot audio for the phone; the names of the marks that follow its pieces."""
    call.voicelive_event({"type": "response.audio.delta", "response_id": rid, "item_id": item, "output_index": 0,
                          "content_index": 0, "delta": b64(nbytes)}, now)
    marks = [a.name for a in call.to_phone if isinstance(a, SendMark)]
    call.to_phone.clear()
    return marks


def finish(call: Call, rid: str, item: str, text: str, now: float, status: str = "cancelled") -> None:
    call.voicelive_event({"type": "response.audio_transcript.done", "response_id": rid, "item_id": item,
                          "output_index": 0, "content_index": 0, "transcript": text}, now)
    call.voicelive_event({"type": "response.done", "response": {"id": rid, "status": status}}, now + 1)


def speaks(call: Call, now: float) -> None:
    call.voicelive_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u"}, now)


def bot_turns(call: Call, events: CallEvents) -> list[tuple[str, bool, int | None]]:
    return [(t["text"], t.get("interrupted", False), t.get("heard_ms"))
            for t in record_of(call, events)["transcript"] if t["role"] == "bot"]


def test_audio_that_came_after_the_barge_in_counts_in_the_share_of_words_heard() -> None:
    """Voice Live's transcript of a cancelled response covers all the audio it made, also the audio
    that reached the gateway after the barge-in (dropped, never played): the caller heard 325 ms of
    2 s, not 325 ms of the 1 s the gateway had at the barge-in."""
    call, events = a_call()
    start_response(call, "r1", "b1", 1000.0)
    marks = audio(call, "r1", "b1", 8000, 1001.0)  # 1 s of µ-law
    call.playback_mark(marks[4], 1300.0)  # 5 pieces of 60 ms played
    speaks(call, 1325.0)  # 25 ms later: 2600 bytes heard
    audio(call, "r1", "b1", 8000, 1330.0)  # in flight: dropped
    finish(call, "r1", "b1", TWENTY, 1400.0)
    assert bot_turns(call, events) == [(heard_words(TWENTY, 2600 / 16000), True, 325)]
    assert bot_turns(call, events)[0][0] == "alpha bravo charlie"


def test_the_cut_applies_to_a_transcript_that_comes_after_the_cancel() -> None:
    call, events = a_call()
    start_response(call, "r1", "b1", 1000.0)
    marks = audio(call, "r1", "b1", 8000, 1001.0)
    call.playback_mark(marks[4], 1300.0)
    speaks(call, 1325.0)
    call.voicelive_event({"type": "response.done", "response": {"id": "r1", "status": "cancelled"}}, 1350.0)
    assert call.conversation.history[0].text is None  # no transcript yet when the barge-in came
    call.voicelive_event({"type": "response.audio_transcript.done", "response_id": "r1", "item_id": "b1",
                          "output_index": 0, "content_index": 0, "transcript": TEN}, 1400.0)
    assert bot_turns(call, events) == [("alpha bravo charlie", True, 325)]


def test_a_turn_the_caller_heard_nothing_of_is_cut_to_nothing() -> None:
    """Items queued behind the one playing at the barge-in, and the items of the cut response that
    had no audio yet, were not heard at all."""
    call, events = a_call()
    start_response(call, "r1", "b1", 1000.0)
    marks = audio(call, "r1", "b1", 8000, 1001.0)
    finish(call, "r1", "b1", TEN, 1010.0, status="completed")
    start_response(call, "r2", "b2", 1020.0)  # (e.g. after a tool: the next answer, queued behind b1)
    audio(call, "r2", "b2", 4000, 1021.0)
    finish(call, "r2", "b2", "and this came next", 1030.0, status="completed")
    start_response(call, "r3", "b3", 1040.0)  # the answer after that, no audio yet
    call.playback_mark(marks[4], 1300.0)
    speaks(call, 1325.0)
    finish(call, "r3", "b3", "never said", 1400.0)
    assert bot_turns(call, events) == [("alpha bravo charlie", True, 325), ("", True, 0), ("", True, 0)]


def test_on_a_paced_leg_the_turns_queued_behind_are_not_heard_either() -> None:
    call, events = a_call(paced=True)
    start_response(call, "r1", "b1", 1000.0)
    audio(call, "r1", "b1", 8000, 1000.0)
    finish(call, "r1", "b1", TEN, 1010.0, status="completed")
    start_response(call, "r2", "b2", 1020.0)
    audio(call, "r2", "b2", 4000, 1020.0)
    finish(call, "r2", "b2", "and this came next", 1030.0, status="completed")
    for now in range(1020, 1330, 20):
        call.tick(float(now))
    speaks(call, 1325.0)  # 325 ms into b1
    assert bot_turns(call, events) == [("alpha bravo charlie", True, 325), ("", True, 0)]


@pytest.mark.parametrize("late_acks", [False, True])
def test_a_later_acknowledgement_moves_the_cut_on_a_leg_that_drops_flushed_marks(late_acks: bool) -> None:
    """At the barge-in the heard position is estimated (the last mark and the time since). On a leg
    whose phone drops the marks a flush discards, a mark pending at the flush that still comes was
    played before the flush took effect: the record takes that more exact position. On a leg that
    echoes every pending mark at a flush (Twilio's clear), those echoes say nothing."""
    call, events = a_call(late_acks=late_acks)
    start_response(call, "r1", "b1", 1000.0)
    marks = audio(call, "r1", "b1", 8000, 1001.0)  # pieces of 480 bytes
    call.playback_mark(marks[4], 1300.0)
    speaks(call, 1325.0)  # estimated: 2600 bytes
    call.playback_mark(marks[7], 1340.0)  # 8 pieces played: 3840 bytes
    finish(call, "r1", "b1", TEN, 1400.0)
    if not late_acks:
        for name in marks[8:]:  # a Twilio-like phone echoes the rest at its clear
            call.playback_mark(name, 1410.0)
    turns = bot_turns(call, events)
    expected = [(heard_words(TEN, 3840 / 8000), True, 480)] if late_acks else [("alpha bravo charlie", True, 325)]
    assert turns == expected
    (barge,) = record_of(call, events)["barge_ins"]
    assert barge["heard_ms"] == 325  # the truncation sent at the barge-in (Voice Live's memory) stays


def test_a_later_acknowledgement_in_the_next_turn_means_the_first_was_heard_whole() -> None:
    call, events = a_call(late_acks=True)
    start_response(call, "r1", "b1", 1000.0)
    first = audio(call, "r1", "b1", 1920, 1001.0)  # 4 pieces
    finish(call, "r1", "b1", TEN, 1010.0, status="completed")
    start_response(call, "r2", "b2", 1020.0)
    second = audio(call, "r2", "b2", 1920, 1021.0)
    finish(call, "r2", "b2", "and this came next", 1030.0, status="completed")
    call.playback_mark(first[1], 1200.0)
    speaks(call, 1210.0)  # estimated: in b1
    call.playback_mark(second[1], 1260.0)  # late: b1 whole and half of b2 played
    assert bot_turns(call, events) == [(TEN, False, None), ("and this", True, 120)]
