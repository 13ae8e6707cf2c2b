// The console's microphone: Float32 samples of the audio graph in, PCM16 little-endian mono at
// 24 kHz out, in 20 ms frames (480 samples), posted to the page, which sends each as one binary
// WebSocket frame. When the audio context does not run at 24 kHz, the samples are resampled
// (linear interpolation) on the way.

const OUT_RATE = 24000;
const FRAME = 480; // 20 ms at 24 kHz

class Pcm16Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / OUT_RATE; // input samples per output sample (1 at 24 kHz)
    this.pos = 0; // where the next output sample falls, in input samples from the first kept one
    this.last = 0; // the previous block's last input sample (for interpolating across blocks)
    this.frame = new Int16Array(FRAME);
    this.filled = 0;
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data && event.data.type === "stop") this.running = false;
    };
  }

  push(value) {
    const clamped = value < -1 ? -1 : value > 1 ? 1 : value;
    this.frame[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    if (this.filled === FRAME) {
      const full = this.frame;
      this.port.postMessage(full.buffer, [full.buffer]);
      this.frame = new Int16Array(FRAME);
      this.filled = 0;
    }
  }

  process(inputs, outputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel && this.running) {
      if (this.step === 1) {
        for (let i = 0; i < channel.length; i++) this.push(channel[i]);
      } else {
        // output sample k lies at input position pos; index -1 is the previous block's last sample
        while (this.pos < channel.length - 1) {
          const i = Math.floor(this.pos);
          const frac = this.pos - i;
          const a = i < 0 ? this.last : channel[i];
          const b = channel[i + 1];
          this.push(a + (b - a) * frac);
          this.pos += this.step;
        }
        this.pos -= channel.length;
        this.last = channel[channel.length - 1];
      }
    }
    const out = outputs[0] && outputs[0][0];
    if (out) out.fill(0); // (connected to a muted gain, only to be kept running)
    return this.running;
  }
}

registerProcessor("pcm16-capture", Pcm16Capture);
