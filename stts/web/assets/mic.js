// The microphone through the realtime WebSocket (/v1/realtime, OpenAI's transcription
// session): getUserMedia -> AudioWorklet (PCM16 at RATE) -> input_audio_buffer.append;
// committed words in black, stts's tentative text in grey.
import { apiKey, ApiError } from "./api.js";

const RATE = 24000; // the session's PCM16 rate (OpenAI's default)
const FINISH_TIMEOUT_MS = 60_000;

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

export class Microphone {
  constructor(output, hooks) {
    this.output = output;
    this.hooks = hooks; // status(text), error(err), ended()
    this.active = false;
  }

  async start(model, language) {
    this.output.replaceChildren();
    this.items = new Map();
    this.queue = [];
    this.ready = false;
    this.stopping = false;
    this.awaitingCommit = false;
    this.flushed = false;
    this.active = true;
    this.hooks.status("Opening the microphone…");
    this.open(model, language); // connects while the microphone starts
    try {
      this.media = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
      });
      // Nothing is played back: no output device is opened (one that is missing or
      // slow to open would hold up the recording).
      this.context = new AudioContext({ sinkId: { type: "none" } });
      await this.context.audioWorklet.addModule("/web/assets/mic-worklet.js");
      const source = this.context.createMediaStreamSource(this.media);
      this.node = new AudioWorkletNode(this.context, "pcm16-writer", {
        numberOfInputs: 1,
        numberOfOutputs: 0,
        processorOptions: { targetRate: RATE },
      });
      this.node.port.onmessage = (event) => this.onAudio(event.data);
      source.connect(this.node);
    } catch (err) {
      this.fail(new Error(`the microphone could not be used (${err.message})`));
    }
  }

  open(model, language) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ intent: "transcription" });
    if (model) query.set("model", model);
    // Browsers cannot set headers on a WebSocket: the key travels as a subprotocol.
    const protocols = ["realtime"];
    if (apiKey()) protocols.push(`openai-insecure-api-key.${apiKey()}`);
    const ws = new WebSocket(`${scheme}//${location.host}/v1/realtime?${query}`, protocols);
    this.ws = ws;
    ws.onmessage = (message) => this.onEvent(JSON.parse(message.data));
    ws.onclose = (event) => {
      if (!this.active) return;
      const reason = event.reason ? `: ${event.reason}` : "";
      this.fail(
        new ApiError(
          0,
          event.code === 1006
            ? "the server refused or dropped the live connection (is the API key right?)"
            : `the live connection closed (${event.code}${reason})`,
        ),
      );
    };
    ws.onopen = () => {
      this.send({
        type: "session.update",
        session: {
          type: "transcription",
          audio: {
            input: {
              format: { type: "audio/pcm", rate: RATE },
              transcription: { model: model || null, language: language || null },
              turn_detection: { type: "server_vad" },
            },
          },
          include: ["stts.tentative"],
        },
      });
    };
  }

  send(event) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(event));
  }

  onAudio({ final, pcm }) {
    if (pcm.byteLength) {
      const event = { type: "input_audio_buffer.append", audio: base64(pcm) };
      if (this.ready) this.send(event);
      else this.queue.push(event);
    }
    if (final) {
      // The rest of the audio went out above: end the utterance being spoken.
      this.flushed = true;
      this.awaitingCommit = true;
      this.send({ type: "input_audio_buffer.commit" });
      this.finishWhenDone();
    }
  }

  item(id) {
    let item = this.items.get(id);
    if (!item) {
      const p = document.createElement("p");
      const final = document.createElement("span");
      final.className = "final";
      const tentative = document.createElement("span");
      tentative.className = "tentative";
      p.append(final, tentative);
      this.output.append(p);
      item = { final, tentative, done: false };
      this.items.set(id, item);
    }
    return item;
  }

  onEvent(event) {
    switch (event.type) {
      case "session.updated":
        this.ready = true;
        for (const queued of this.queue.splice(0)) this.send(queued);
        this.hooks.status("Listening… speak now.");
        break;
      case "input_audio_buffer.speech_started":
        this.item(event.item_id);
        this.hooks.status("Hearing speech…");
        break;
      case "input_audio_buffer.committed":
        this.awaitingCommit = false;
        break;
      case "conversation.item.input_audio_transcription.delta": {
        const item = this.item(event.item_id);
        item.final.textContent += event.delta;
        break;
      }
      case "stts.input_audio_transcription.tentative": {
        const item = this.item(event.item_id);
        item.tentative.textContent = event.text ? ` ${event.text.trim()}` : "";
        break;
      }
      case "conversation.item.input_audio_transcription.completed": {
        const item = this.item(event.item_id);
        item.final.textContent = event.transcript;
        item.tentative.textContent = "";
        item.done = true;
        if (!this.stopping) this.hooks.status("Listening… speak now.");
        break;
      }
      case "conversation.item.input_audio_transcription.failed":
        this.item(event.item_id).done = true;
        this.hooks.error(new ApiError(0, event.error.message));
        break;
      case "error":
        if (this.stopping && event.error.code === "input_audio_buffer_commit_empty") {
          this.awaitingCommit = false; // stopped between utterances: nothing to end
        } else {
          this.hooks.error(new ApiError(0, event.error.message));
        }
        break;
      default:
        break;
    }
    if (this.stopping) this.finishWhenDone();
  }

  stop() {
    if (!this.active || this.stopping) return;
    this.stopping = true;
    this.hooks.status("Finishing the last words…");
    for (const track of this.media.getTracks()) track.stop();
    this.node.port.postMessage("flush"); // answered with the last chunk, marked final
    this.deadline = setTimeout(() => this.close("Stopped (the server took too long)."), FINISH_TIMEOUT_MS);
  }

  finishWhenDone() {
    const open = [...this.items.values()].some((item) => !item.done);
    if (this.flushed && !this.awaitingCommit && !open) this.close("Stopped.");
  }

  close(status) {
    if (!this.active) return;
    this.active = false;
    clearTimeout(this.deadline);
    if (this.media) for (const track of this.media.getTracks()) track.stop();
    if (this.context) this.context.close();
    if (this.ws) this.ws.close(1000);
    this.hooks.status(status);
    this.hooks.ended();
  }

  fail(err) {
    this.hooks.error(err);
    this.close("");
  }
}
