// The gateway console: call a profile from the microphone and hear the bot (the console's phone,
// over the WebSocket /console/media), follow the call's transcript, barge-ins, tools and turn
// latency; list the calls in progress (those of every worker of this gateway on this machine, with
// several workers) and end one; show the last calls' records.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const FRAME_BACKLOG = 24000 * 2 * 2; // bytes waiting in the socket (2 s of audio): newer frames wait no longer

  // what the page has done, live (read by tests, handy in the developer tools)
  const stats = {
    framesSent: 0,
    botBytesReceived: 0,
    botSamplesPlayed: 0,
    marksAcked: 0,
    clears: 0,
    state: "idle",
  };
  window.consoleStats = stats;

  let call = null; // the call in progress from this page
  let mode = "token";

  // --- the call's state and transcript ------------------------------------------------------

  function setState(text) {
    stats.state = text;
    $("call-state").textContent = text;
    const busy = call !== null;
    $("call-button").disabled = busy;
    $("profile").disabled = busy;
    $("hangup-button").disabled = !busy;
    for (const key of document.querySelectorAll("#keypad button")) key.disabled = text !== "in call";
  }

  function seconds(t) {
    return typeof t === "number" ? (t / 1000).toFixed(1) + "s" : "";
  }

  function addEntry(role, text, t, itemId) {
    const list = $("transcript");
    const entry = document.createElement("li");
    entry.className = "entry";
    entry.dataset.role = role;
    if (itemId) entry.dataset.item = itemId;
    const time = document.createElement("span");
    time.className = "t";
    time.textContent = seconds(t);
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    entry.append(time, body);
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
    list.append(entry);
    if (atBottom) list.scrollTop = list.scrollHeight;
    return entry;
  }

  function setText(entry, text) {
    entry.querySelector(".text").textContent = text;
  }

  function onEvent(name, t, f) {
    f = f || {};
    switch (name) {
      case "caller.speech_started":
        if (!document.querySelector('#transcript .entry[data-role="caller"].pending')) {
          addEntry("caller", "…", t).classList.add("pending");
        }
        break;
      case "caller.transcript": {
        const text = f.text ? String(f.text) : "(no words heard)";
        const pending = document.querySelector('#transcript .entry[data-role="caller"].pending');
        if (pending) {
          pending.classList.remove("pending");
          setText(pending, text);
          if (f.item_id) pending.dataset.item = f.item_id;
        } else {
          addEntry("caller", text, t, f.item_id);
        }
        break;
      }
      case "bot.transcript": {
        const entry = addEntry("bot", f.text ? String(f.text) : "(no words)", t, f.item_id);
        if (f.item_id && call && call.interrupted.has(f.item_id)) entry.classList.add("interrupted");
        break;
      }
      case "barge_in": {
        const cut = typeof f.truncated_at_ms === "number" ? `, its answer cut at ${f.truncated_at_ms} ms` : "";
        addEntry("barge-in", `Barge-in: the bot stopped${cut}`, t);
        if (f.item_id && call) {
          call.interrupted.add(f.item_id);
          for (const entry of document.querySelectorAll('#transcript .entry[data-role="bot"]')) {
            if (entry.dataset.item === f.item_id) entry.classList.add("interrupted");
          }
        }
        break;
      }
      case "tool.called":
        addEntry("tool", `Tool ${f.name || "?"} called`, t);
        break;
      case "tool.done":
        addEntry("tool", `Tool ${f.name || "?"} done${f.ok === false ? " (error)" : ""}`, t);
        break;
      case "tool.refused":
        addEntry("tool", `Tool ${f.name || "?"} refused${f.error ? ": " + f.error : ""}`, t);
        break;
      case "bot.first_audio":
        if (typeof f.after_speech_stopped_ms === "number") {
          const ms = Math.round(f.after_speech_stopped_ms);
          addEntry("latency", `reply after ${ms} ms`, t);
          $("latency").textContent = `${ms} ms`;
        }
        break;
      case "voicelive.error":
        addEntry("error", `Voice Live error${f.code ? " " + f.code : ""}${f.message ? ": " + f.message : ""}`, t);
        break;
      case "call.ended":
        if (call && f.reason) call.endReason = String(f.reason);
        break;
      default:
        break;
    }
  }

  // --- audio: the microphone and the speaker ---------------------------------------------------

  async function openAudio(c) {
    const constraints = { audio: { echoCancellation: true, noiseSuppression: true, channelCount: 1 } };
    c.stream = await navigator.mediaDevices.getUserMedia(constraints);
    let source;
    try {
      source = c.audio.createMediaStreamSource(c.stream);
    } catch (err) {
      // (a browser that cannot feed a 24 kHz context from its microphone: the worklets resample)
      await c.audio.close();
      c.audio = new AudioContext({ latencyHint: "interactive" });
      source = c.audio.createMediaStreamSource(c.stream);
    }
    const ctx = c.audio;
    await ctx.audioWorklet.addModule("/console/static/capture-worklet.js");
    await ctx.audioWorklet.addModule("/console/static/playback-worklet.js");
    c.capture = new AudioWorkletNode(ctx, "pcm16-capture", {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1], channelCount: 1, channelCountMode: "explicit",
    });
    const mute = ctx.createGain();
    mute.gain.value = 0;
    source.connect(c.capture).connect(mute).connect(ctx.destination);
    c.playback = new AudioWorkletNode(ctx, "pcm16-playback", { numberOfInputs: 0, numberOfOutputs: 1,
                                                                outputChannelCount: [1] });
    c.playback.connect(ctx.destination);
    c.capture.port.onmessage = (event) => sendFrame(c, event.data);
    c.playback.port.onmessage = (event) => fromPlayback(c, event.data);
    await ctx.resume();
  }

  function sendFrame(c, buffer) {
    const ws = c.ws;
    if (!c.started || c.ended || !ws || ws.readyState !== WebSocket.OPEN) return;
    if (ws.bufferedAmount > FRAME_BACKLOG) return; // (a stalled connection: the caller's audio is late anyway)
    ws.send(buffer);
    stats.framesSent += 1;
  }

  function ack(c, name) {
    if (c.ws && c.ws.readyState === WebSocket.OPEN) {
      c.ws.send(JSON.stringify({ type: "played", name }));
      stats.marksAcked += 1;
    }
  }

  function fromPlayback(c, message) {
    if (c !== call) return;
    if (typeof message.played === "number") stats.botSamplesPlayed = message.played;
    if (message.type === "played") {
      ack(c, message.name);
    } else if (message.type === "cleared") {
      for (const name of message.marks) ack(c, name); // every pending mark, at the flush
    }
  }

  // --- the media socket --------------------------------------------------------------------------

  function fromGateway(c, event) {
    if (typeof event.data !== "string") {
      let buffer = event.data;
      stats.botBytesReceived += buffer.byteLength;
      if (buffer.byteLength % 2) buffer = buffer.slice(0, buffer.byteLength - 1);
      if (c.playback) c.playback.port.postMessage({ type: "audio", buffer }, [buffer]);
      return;
    }
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (err) {
      return;
    }
    switch (message.type) {
      case "started":
        c.started = true;
        c.callId = message.call_id;
        setState("in call");
        refreshCalls();
        break;
      case "mark":
        if (c.playback) c.playback.port.postMessage({ type: "mark", name: message.name });
        break;
      case "clear":
        stats.clears += 1;
        if (c.playback) c.playback.port.postMessage({ type: "clear" });
        break;
      case "event":
        onEvent(message.name, message.t, message.fields);
        break;
      case "ended":
        c.endReason = String(message.reason || "ended");
        break;
      case "error":
        addEntry("error", String(message.message || "the gateway refused the call"));
        c.endReason = c.endReason || "error";
        break;
      default:
        break;
    }
  }

  function finish(c, reason) {
    if (c.ended) return;
    c.ended = true;
    clearTimeout(c.closeTimer);
    if (c.capture) c.capture.port.postMessage({ type: "stop" });
    if (c.stream) for (const track of c.stream.getTracks()) track.stop();
    if (c.audio) c.audio.close().catch(() => {});
    if (c.ws && c.ws.readyState <= WebSocket.OPEN) c.ws.close(1000);
    if (call === c) call = null;
    setState(`ended: ${reason}`);
    refreshCalls();
    setTimeout(refreshState, 1000); // (the call's record, when records are on, is built as it ends)
  }

  async function startCall() {
    if (call !== null) return;
    const profile = $("profile").value;
    if (!profile) return;
    const c = {
      ws: null, audio: null, stream: null, capture: null, playback: null, started: false, ended: false,
      hangup: false, endReason: null, callId: null, interrupted: new Set(), closeTimer: 0,
    };
    call = c;
    $("transcript").replaceChildren();
    $("latency").textContent = "–";
    Object.assign(stats, { framesSent: 0, botBytesReceived: 0, botSamplesPlayed: 0, marksAcked: 0, clears: 0 });
    setState("connecting");
    try {
      // (made while the click still counts as the user's gesture: it may play at once)
      c.audio = new AudioContext({ sampleRate: 24000, latencyHint: "interactive" });
      await openAudio(c);
    } catch (err) {
      addEntry("error", `The microphone or the speaker could not be opened: ${err && err.message ? err.message : err}`);
      finish(c, "no microphone");
      return;
    }
    if (c.ended) return;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/console/media");
    c.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => ws.send(JSON.stringify({ type: "start", profile }));
    ws.onmessage = (event) => fromGateway(c, event);
    ws.onclose = (event) => {
      let reason = c.endReason;
      if (!reason && c.hangup) reason = "caller_hung_up";
      if (!reason) reason = c.started ? `connection closed (${event.code})` : "could not connect";
      finish(c, reason);
    };
  }

  function hangUp() {
    const c = call;
    if (c === null) return;
    c.hangup = true;
    if (c.ws && c.ws.readyState === WebSocket.OPEN && c.started) {
      c.ws.send(JSON.stringify({ type: "hangup" }));
      // the gateway closes the socket; should it not, the page does
      c.closeTimer = setTimeout(() => finish(c, c.endReason || "caller_hung_up"), 3000);
    } else {
      finish(c, "caller_hung_up");
    }
  }

  function pressKey(digit) {
    const c = call;
    if (c && c.started && c.ws && c.ws.readyState === WebSocket.OPEN) {
      c.ws.send(JSON.stringify({ type: "dtmf", digit }));
    }
  }

  // --- the calls in progress and the recent calls ----------------------------------------------

  async function getJson(url) {
    const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) {
      location.reload(); // (logged out, or the session expired: the login form)
      return null;
    }
    return response.ok ? response.json() : null;
  }

  function duration(s) {
    const whole = Math.max(0, Math.floor(s));
    return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
  }

  function showWorker(worker) {
    if (!worker) return;
    const one = worker.workers <= 1;
    $("worker").textContent = one ? `worker ${worker.pid}` : `worker ${worker.pid} of ${worker.workers}`;
    let scope = `Calls of this gateway (worker ${worker.pid}).`;
    if (!one) {
      scope = worker.all
        ? `Calls of all ${worker.workers} workers of this gateway (this machine).`
        : `Calls of worker ${worker.pid}, one of ${worker.workers} workers: each lists only its own calls.`;
    }
    $("calls-scope").textContent = scope;
    $("calls-table").classList.toggle("by-worker", !one && Boolean(worker.all));
  }

  const ENDING_MS = 10000; // a call asked to end that is still listed after this: its End button is back

  function cell(row, name) {
    let td = row.querySelector(`td.${name}`);
    if (!td) {
      td = document.createElement("td");
      td.className = name;
      row.append(td);
    }
    return td;
  }

  function renderCalls(calls) {
    const body = $("calls");
    const seen = new Set();
    for (const item of calls) {
      seen.add(item.call_id);
      let row = null;
      for (const existing of body.querySelectorAll("tr.call-row")) {
        if (existing.dataset.callId === item.call_id) row = existing;
      }
      if (!row) {
        row = document.createElement("tr");
        row.className = "call-row";
        row.dataset.callId = item.call_id;
        for (const name of ["carrier", "direction", "profile", "duration", "state", "turns", "worker"]) cell(row, name);
        const td = document.createElement("td");
        const end = document.createElement("button");
        end.type = "button";
        end.className = "end-call";
        end.textContent = "End";
        end.title = "End this call (the gateway hangs up)";
        end.addEventListener("click", () => endCall(item.call_id, end));
        td.append(end);
        row.append(td);
        body.append(row);
      }
      row.classList.toggle("mine", Boolean(call && call.callId === item.call_id));
      cell(row, "carrier").textContent = item.carrier;
      cell(row, "direction").textContent = item.direction;
      cell(row, "profile").textContent = item.profile;
      cell(row, "duration").textContent = duration(item.duration_s);
      const ending = Number(row.dataset.ending || 0);
      const stillEnding = ending > 0 && Date.now() - ending < ENDING_MS;
      if (ending && !stillEnding) delete row.dataset.ending;
      row.classList.toggle("ending", stillEnding);
      cell(row, "state").textContent = stillEnding ? "ending…" : item.state;
      cell(row, "turns").textContent = String(item.turns);
      cell(row, "worker").textContent = item.worker === undefined ? "" : String(item.worker);
      const end = row.querySelector("button.end-call");
      if (end && !row.dataset.asking) end.disabled = stillEnding;
    }
    for (const row of body.querySelectorAll("tr.call-row")) {
      if (!seen.has(row.dataset.callId)) row.remove();
    }
    $("calls-empty").hidden = calls.length > 0;
  }

  async function endCall(callId, button) {
    const row = button.closest("tr");
    button.disabled = true;
    row.dataset.asking = "1";
    try {
      const response = await fetch(`/console/api/calls/${encodeURIComponent(callId)}/end`, {
        // (its own origin, not "null": the page sends no referrer elsewhere, and a user agent that does
        // not say where a request came from would otherwise look like another site to the gateway)
        method: "POST", credentials: "same-origin", cache: "no-store", referrerPolicy: "same-origin",
      });
      if (response.status === 401) location.reload();
      if (response.status === 202) {
        // the call is ending (at once on this worker, within a second on another): "ending…" until it goes
        row.dataset.ending = String(Date.now());
        row.classList.add("ending");
        const state = row.querySelector("td.state");
        if (state) state.textContent = "ending…";
      }
    } finally {
      delete row.dataset.asking;
      button.disabled = Boolean(row.dataset.ending);
      refreshCalls();
    }
  }

  let shownRecords = null; // the ids of the records shown (a record never changes once made)

  function renderRecords(records, on) {
    $("records-note").textContent = !on
      ? "Post-call records are off on this gateway (records.webhook in config.yaml)."
      : records.length ? "" : "No call has ended yet.";
    const ids = records.map((record) => record.id).join(" ");
    if (ids === shownRecords) return; // (nothing new: what the operator opened stays open)
    shownRecords = ids;
    const list = $("records");
    const open = new Set();
    for (const details of list.querySelectorAll("details[open]")) open.add(details.dataset.record);
    list.replaceChildren();
    for (const record of records) {
      const li = document.createElement("li");
      const details = document.createElement("details");
      details.dataset.record = record.id;
      details.open = open.has(record.id);
      const summary = document.createElement("summary");
      const when = record.started_at ? new Date(record.started_at).toLocaleTimeString() : "";
      const secondsLong = typeof record.duration_ms === "number" ? duration(record.duration_ms / 1000) : "?";
      summary.textContent = [when, record.profile, record.carrier, record.direction, secondsLong,
                             record.end_reason, `${record.turns} turn${record.turns === 1 ? "" : "s"}`].filter(Boolean).join(" · ");
      details.append(summary);
      const lines = document.createElement("ol");
      lines.className = "lines";
      for (const entry of record.transcript || []) {
        const line = document.createElement("li");
        const who = entry.role === "caller" ? "Caller" : "Bot";
        line.textContent = `${who}: ${entry.text || ""}${entry.interrupted ? " (interrupted)" : ""}`;
        lines.append(line);
      }
      if (!lines.children.length) {
        const line = document.createElement("li");
        line.textContent = "(no transcript)";
        lines.append(line);
      }
      details.append(lines);
      li.append(details);
      list.append(li);
    }
  }

  async function refreshCalls() {
    if (document.visibilityState !== "visible") return;
    try {
      const body = await getJson("/console/api/calls");
      if (body) {
        renderCalls(body.calls || []);
        showWorker(body.worker);
      }
    } catch (err) {
      // (the gateway restarting: the next refresh tries again)
    }
  }

  async function refreshState(first) {
    try {
      const body = await getJson("/console/api/state");
      if (!body) return;
      mode = body.mode;
      $("logout-form").hidden = mode !== "token";
      if (first) {
        const select = $("profile");
        select.replaceChildren();
        for (const name of body.profiles || []) {
          const option = document.createElement("option");
          option.value = name;
          option.textContent = name;
          if (name === body.default_profile) option.selected = true;
          select.append(option);
        }
      }
      showWorker(body.worker);
      renderCalls(body.calls || []);
      renderRecords(body.records || [], body.records_on);
    } catch (err) {
      // (as above)
    }
  }

  // --- start --------------------------------------------------------------------------------------

  function start() {
    $("call-button").addEventListener("click", startCall);
    $("hangup-button").addEventListener("click", hangUp);
    for (const key of document.querySelectorAll("#keypad button")) {
      key.addEventListener("click", () => pressKey(key.dataset.key));
    }
    window.addEventListener("pagehide", () => {
      if (call && call.ws && call.ws.readyState === WebSocket.OPEN) call.ws.send(JSON.stringify({ type: "hangup" }));
    });
    setState("idle");
    refreshState(true);
    setInterval(refreshCalls, 1000);
    setInterval(() => { if (document.visibilityState === "visible") refreshState(false); }, 10000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
