#!/usr/bin/env bash
# Regenerate the speech clips in gateway/assets/ used by the local Voice Live simulator, the
# demo and the tests.
#
# Needs: espeak-ng and sox on the PATH (Debian/Ubuntu: `apt-get install espeak-ng sox`).
# Run from anywhere:  bash scripts/make_speech.sh
#
# The generated WAV files are committed, so nothing else (tests, CI, the demo) needs these tools.
# Output:
#   caller_*.wav  the caller's side: 8 kHz mono G.711 µ-law WAV (format tag 7), exactly what
#                 Twilio streams; American English male voice.
#   bot_*.wav     the bot's replies: 24 kHz mono 16-bit PCM WAV (Voice Live `pcm16`); British
#                 English female voice, so the two sides are easy to tell apart.
#   speech.txt    one line per clip, `<file>: <text>`; the simulator reads its transcripts here.
# Leading and trailing silence is trimmed and replaced by exactly 100 ms of digital silence on
# each side, so that speech starts and ends at known times.
set -euo pipefail

for tool in espeak-ng sox; do
    command -v "$tool" >/dev/null || { echo "make_speech.sh: $tool is not installed" >&2; exit 1; }
done

out="$(cd "$(dirname "$0")/.." && pwd)/gateway/assets"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

CALLER_VOICE="en-us"
CALLER_SPEED=165
BOT_VOICE="en-gb+f3"
BOT_SPEED=170

# name|kind|text
CLIPS=(
    "caller_hours|caller|Hi! What are your opening hours this week?"
    "caller_delivery|caller|Great, thanks. And do you deliver on weekends?"
    "caller_interrupt|caller|Sorry to interrupt, can I talk to a person instead?"
    "bot_greeting|bot|Hello, thanks for calling. How can I help you today?"
    "bot_reply_1|bot|This week we are open from nine to six, Monday to Saturday."
    "bot_reply_2|bot|Yes, we deliver on Saturdays and Sundays, from ten in the morning until four in the afternoon. Delivery is free on orders over thirty dollars, and anything ordered by noon on Friday arrives on Saturday."
    "bot_reply_3|bot|Of course, let me connect you with a colleague. Please hold."
    "apology|bot|Sorry, we cannot take your call right now. Please call again later."
)

: > "$tmp/speech.txt"
for clip in "${CLIPS[@]}"; do
    IFS='|' read -r name kind text <<< "$clip"
    if [[ $kind == caller ]]; then
        voice=$CALLER_VOICE speed=$CALLER_SPEED
        encode=(-r 8000 -c 1 -e u-law -b 8)
    else
        voice=$BOT_VOICE speed=$BOT_SPEED
        encode=(-r 24000 -c 1 -e signed-integer -b 16)
    fi
    espeak-ng -v "$voice" -s "$speed" -w "$tmp/$name.raw.wav" "$text"
    # -D: no dither, so the output is reproducible and the padding is digital silence.
    # silence/reverse/silence/reverse trims both ends; pad puts back 100 ms on each side;
    # gain -n -3 normalises the peak to -3 dBFS.
    sox -D "$tmp/$name.raw.wav" "${encode[@]}" "$out/$name.wav" \
        silence 1 0.02 -50d reverse silence 1 0.02 -50d reverse \
        gain -n -3 pad 0.1 0.1
    printf '%s.wav: %s\n' "$name" "$text" >> "$tmp/speech.txt"
    printf '%-22s %6.2f s\n' "$name.wav" "$(soxi -D "$out/$name.wav")"
done
mv "$tmp/speech.txt" "$out/speech.txt"
du -ch "$out"/*.wav | tail -n 1
