// Microphone samples (the AudioContext's rate, often 44.1 or 48 kHz) -> mono PCM16 at the
// session's rate, posted to the page in 100 ms chunks. Linear interpolation: Whisper and
// the other engines look at speech below 8 kHz, far from where its aliasing lands.
class Pcm16Writer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const target = options.processorOptions.targetRate;
    this.step = sampleRate / target; // input samples per output sample
    this.pos = 0; // next output sample, in input samples from this block's start
    this.last = 0; // the previous block's last sample (index -1)
    this.out = new Int16Array(Math.round(target / 10));
    this.fill = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") this.post(true);
    };
  }

  post(final) {
    const chunk = this.out.slice(0, this.fill);
    this.port.postMessage({ final, pcm: chunk.buffer }, [chunk.buffer]);
    this.fill = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    let x = channels[0];
    if (channels.length > 1) {
      x = new Float32Array(x.length);
      for (const c of channels) for (let i = 0; i < x.length; i++) x[i] += c[i] / channels.length;
    }
    const n = x.length;
    while (this.pos < n - 1) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i < 0 ? this.last : x[i];
      const v = a + (x[i + 1] - a) * frac;
      this.out[this.fill++] = Math.max(-1, Math.min(1, v)) * 32767;
      if (this.fill === this.out.length) this.post(false);
      this.pos += this.step;
    }
    this.pos -= n;
    this.last = x[n - 1];
    return true;
  }
}

registerProcessor("pcm16-writer", Pcm16Writer);
