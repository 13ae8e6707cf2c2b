// The console's speaker and its playout clock. The page hands it the bot's audio (PCM16 LE mono at
// 24 kHz, as the gateway sends it) and the gateway's marks, in the order they came. A mark's
// position is the number of samples queued before it; once the samples actually played pass that
// position, the mark is reported as played, and the page acknowledges it to the gateway: the
// gateway then knows how much of the bot's answer the operator heard. A clear (barge-in) drops
// every queued sample at once and reports every pending mark then (as a phone network returns its
// pending marks when its buffer is cleared). Positions and counts are in 24 kHz samples; when the
// audio context runs at another rate, the queue is read at 24 kHz and interpolated.

const IN_RATE = 24000;
const REPORT_EVERY = 2400; // report the samples played every 100 ms of playback at least

class Pcm16Playback extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = IN_RATE / sampleRate; // queue samples per output sample (1 at 24 kHz)
    this.chunks = []; // Float32Array pieces waiting to be played
    this.offset = 0; // read position in chunks[0] (fractional when resampling)
    this.queued = 0; // samples ever queued (minus those a clear dropped): the next mark's position
    this.played = 0; // samples actually played
    this.marks = []; // [{name, position}], in order
    this.reported = 0;
    this.port.onmessage = (event) => this.receive(event.data);
  }

  receive(message) {
    if (message.type === "audio") {
      const pcm = new Int16Array(message.buffer);
      const floats = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) floats[i] = pcm[i] / 32768;
      if (floats.length) {
        this.chunks.push(floats);
        this.queued += floats.length;
      }
    } else if (message.type === "mark") {
      this.marks.push({ name: message.name, position: this.queued });
    } else if (message.type === "clear") {
      const dropped = this.queued - this.played;
      this.chunks = [];
      this.offset = 0;
      this.queued = this.played;
      const flushed = this.marks.map((mark) => mark.name);
      this.marks = [];
      this.port.postMessage({ type: "cleared", dropped, marks: flushed, played: this.played });
    }
  }

  // the next queue sample at the read position, or null when the queue ran dry
  take() {
    while (this.chunks.length) {
      const chunk = this.chunks[0];
      const i = Math.floor(this.offset);
      if (i < chunk.length) {
        let value = chunk[i];
        const frac = this.offset - i;
        if (frac > 0) {
          const next = i + 1 < chunk.length ? chunk[i + 1] : this.chunks.length > 1 ? this.chunks[1][0] : value;
          value += (next - value) * frac;
        }
        const before = Math.floor(this.offset);
        this.offset += this.step;
        this.played += Math.floor(this.offset) - before;
        return value;
      }
      this.offset -= chunk.length;
      this.chunks.shift();
    }
    this.offset = 0;
    return null;
  }

  process(inputs, outputs) {
    const out = outputs[0];
    const first = out[0];
    for (let k = 0; k < first.length; k++) {
      const value = this.take();
      const sample = value === null ? 0 : value;
      for (let c = 0; c < out.length; c++) out[c][k] = sample;
    }
    if (this.played > this.queued) this.played = this.queued; // (interpolation past the last sample)
    while (this.marks.length && this.marks[0].position <= this.played) {
      this.port.postMessage({ type: "played", name: this.marks.shift().name, played: this.played });
    }
    if (this.played - this.reported >= REPORT_EVERY || (this.played !== this.reported && !this.chunks.length)) {
      this.reported = this.played;
      this.port.postMessage({ type: "progress", played: this.played });
    }
    return true;
  }
}

registerProcessor("pcm16-playback", Pcm16Playback);
