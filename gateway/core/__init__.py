"""The parts of the pure per-call state machine (:mod:`gateway.call` puts them together): what a
call asks for, where the phone's playback stands, the call's states, its conversation memory,
caller keys, silence, tool calls and the farewell. No I/O, no clocks: time is passed in."""
