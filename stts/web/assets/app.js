// The page: server info, the key prompt, file transcription with its result.
import { api, apiKey, setApiKey, ApiError, sseEvents } from "./api.js";
import { Microphone } from "./mic.js";

const $ = (id) => document.getElementById(id);
const state = { file: null, url: null, controller: null, transcript: null, modelsLoaded: false };

// -- errors and the key ---------------------------------------------------------------

export function showError(err) {
  if (err instanceof ApiError && err.status === 401) {
    askKey(apiKey() ? "The server refused this key." : "This server needs an API key.");
    if (!apiKey()) return; // nothing went wrong yet: the prompt says it all
  }
  const box = $("error");
  box.textContent = err instanceof ApiError ? err.text : `Error: ${err.message || err}`;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function askKey(reason) {
  const form = $("key-form");
  $("key-reason").textContent = reason;
  if (form.hidden) {
    form.hidden = false;
    $("key-input").focus();
  }
}

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  setApiKey($("key-input").value.trim());
  $("key-input").value = "";
  clearError();
  if (await loadServerInfo()) $("key-form").hidden = true;
});

// -- what the server offers -----------------------------------------------------------

async function loadServerInfo() {
  try {
    const models = await (await api("/v1/models")).json();
    const select = $("model");
    const chosen = select.value;
    select.replaceChildren(
      ...models.data.map((m) => new Option(m.id, m.id, false, m.id === chosen)),
    );
    state.modelsLoaded = true;
  } catch (err) {
    showError(err);
    return false;
  }
  try {
    showEngines(await (await api("/api/v1/engines")).json());
  } catch (err) {
    $("engines-body").textContent = err instanceof ApiError ? err.text : String(err);
  }
  updateButtons();
  return true;
}

function yesNo(value) {
  return value ? "yes" : "no";
}

function showEngines(report) {
  const languages = new Set();
  const rows = report.available.map((name) => {
    const d = report.details[name];
    const caps = d.capabilities;
    if (Array.isArray(caps.languages)) caps.languages.forEach((l) => languages.add(l));
    const langs = Array.isArray(caps.languages) ? `${caps.languages.length}` : caps.languages;
    const cells = [
      `${name}${d.default ? " (default)" : ""}`,
      d.model,
      d.loaded ? "loaded" : "not loaded",
      langs,
      yesNo(caps.streaming),
      yesNo(caps.translation),
      yesNo(caps.word_timestamps),
    ];
    const tr = document.createElement("tr");
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  const table = document.createElement("table");
  const head = document.createElement("tr");
  for (const title of ["engine", "model", "state", "languages", "live", "translate", "word times"]) {
    const th = document.createElement("th");
    th.textContent = title;
    head.append(th);
  }
  table.append(head, ...rows);
  $("engines-body").replaceChildren(table);
  $("languages").replaceChildren(...[...languages].sort().map((l) => new Option(l, l)));
}

// -- file -> transcript ---------------------------------------------------------------

function pickFile(file) {
  if (!file) return;
  state.file = file;
  $("file-name").textContent = `${file.name} (${(file.size / 1e6).toFixed(2)} MB)`;
  if (state.url) URL.revokeObjectURL(state.url);
  state.url = URL.createObjectURL(file); // played from here: nothing is uploaded twice
  $("player").src = state.url;
  clearResult();
  updateButtons();
}

$("file").addEventListener("change", () => pickFile($("file").files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  pickFile(event.dataTransfer.files[0]);
});

function updateButtons() {
  const busy = state.controller !== null;
  $("start").disabled = busy || !state.file || !state.modelsLoaded;
  $("cancel").disabled = !busy;
  const translate = $("task").value === "translate";
  $("words").disabled = translate; // translations carry no word times
}
$("task").addEventListener("change", updateButtons);

function clearResult() {
  state.transcript = null;
  $("segments").replaceChildren();
  $("result").hidden = true;
  for (const button of $("downloads").querySelectorAll("button")) button.disabled = true;
}

function clock(seconds) {
  const m = Math.floor(seconds / 60);
  const s = (seconds - m * 60).toFixed(1).padStart(4, "0");
  return `${m}:${s}`;
}

function addSegment(segment) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.start = segment.start;
  button.dataset.end = segment.end;
  const time = document.createElement("time");
  time.textContent = `${clock(segment.start)} – ${clock(segment.end)}`;
  const text = document.createElement("span");
  text.textContent = segment.text.trim();
  button.append(time, text);
  button.title = `Play from ${clock(segment.start)}`;
  button.addEventListener("click", () => {
    const player = $("player");
    player.currentTime = segment.start;
    player.play().catch(() => {}); // no audio output (or a format it cannot play): seek only
  });
  li.append(button);
  $("segments").append(li);
  $("result").hidden = false;
}

$("player").addEventListener("timeupdate", () => {
  const now = $("player").currentTime;
  for (const b of $("segments").querySelectorAll("button")) {
    b.classList.toggle("playing", now >= b.dataset.start && now < b.dataset.end);
  }
});

function finish(transcript) {
  state.transcript = transcript;
  if (!$("segments").children.length) (transcript.segments || []).forEach(addSegment);
  if (!transcript.segments || !transcript.segments.length) {
    const li = document.createElement("li");
    li.textContent = transcript.text || "(no speech found)";
    $("segments").append(li);
  }
  $("result").hidden = false;
  for (const button of $("downloads").querySelectorAll("button")) button.disabled = false;
}

function progress(seconds) {
  const bar = $("progress");
  const total = $("player").duration;
  if (Number.isFinite(total) && total > 0) {
    bar.max = total;
    bar.value = Math.min(seconds, total);
    $("status").textContent = `Transcribed ${clock(seconds)} of ${clock(total)}`;
  } else {
    $("status").textContent = `Transcribed ${clock(seconds)}`;
  }
}

async function transcribe() {
  clearError();
  clearResult();
  const translate = $("task").value === "translate";
  const form = new FormData();
  form.append("file", state.file, state.file.name);
  form.append("model", $("model").value);
  form.append("response_format", "verbose_json");
  const language = $("language").value.trim();
  if (language && !translate) form.append("language", language);
  if (!translate) {
    form.append("stream", "true");
    if ($("words").checked) {
      form.append("timestamp_granularities[]", "word");
      form.append("timestamp_granularities[]", "segment");
    }
  }
  const controller = new AbortController();
  state.controller = controller;
  updateButtons();
  const bar = $("progress");
  bar.hidden = false;
  bar.removeAttribute("value"); // indeterminate until the first segment
  $("status").textContent = "Uploading and decoding…";
  const path = translate ? "/v1/audio/translations" : "/v1/audio/transcriptions";
  try {
    const response = await api(path, { method: "POST", body: form, signal: controller.signal });
    $("status").textContent = "Transcribing…";
    if (translate) {
      finish(await response.json());
    } else {
      for await (const event of sseEvents(response)) {
        if (event.type === "transcript.text.segment") {
          addSegment(event);
          progress(event.end);
        } else if (event.type === "transcript.text.done") {
          finish(event.verbose_json);
        } else if (event.type === "error") {
          throw new ApiError(0, event.error.message);
        }
      }
    }
    $("status").textContent = state.transcript ? "Done." : "The answer ended early.";
  } catch (err) {
    if (err.name === "AbortError") {
      $("status").textContent = "Cancelled.";
    } else {
      $("status").textContent = "";
      showError(err);
    }
  } finally {
    state.controller = null;
    bar.hidden = true;
    updateButtons();
  }
}

$("start").addEventListener("click", transcribe);
// Aborting closes the request: the server stops the engine at its next segment.
$("cancel").addEventListener("click", () => state.controller && state.controller.abort());

// -- copy and downloads: the server's own renderings ----------------------------------

$("copy").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(state.transcript.text);
    $("status").textContent = "Text copied.";
  } catch {
    $("status").textContent = "Copying is not allowed here: select the text instead.";
  }
});

const SUFFIX = { text: ".txt", srt: ".srt", vtt: ".vtt", json: ".json" };

function save(blob, format) {
  const base = (state.file ? state.file.name : "transcript").replace(/\.[^.]*$/, "");
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = base + SUFFIX[format];
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

for (const button of $("downloads").querySelectorAll("button[data-format]")) {
  button.addEventListener("click", async () => {
    const format = button.dataset.format;
    clearError();
    try {
      if (format === "json") {
        // verbose_json exactly as the server sent it
        const body = JSON.stringify(state.transcript, null, 2);
        save(new Blob([body], { type: "application/json" }), format);
        return;
      }
      const response = await api("/web/render", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ format, transcript: state.transcript }),
      });
      save(await response.blob(), format);
    } catch (err) {
      showError(err);
    }
  });
}

// -- microphone -----------------------------------------------------------------------

function setupMicrophone() {
  const note = $("mic-unavailable");
  if (!window.isSecureContext) {
    note.textContent =
      "The microphone needs a secure page: open this page as http://localhost:… on the " +
      "server itself, or through https.";
    note.hidden = false;
    return;
  }
  if (!navigator.mediaDevices || !window.AudioWorkletNode) {
    note.textContent = "This browser cannot record here (no getUserMedia or AudioWorklet).";
    note.hidden = false;
    return;
  }
  const mic = new Microphone($("live"), {
    status: (text) => ($("mic-status").textContent = text),
    error: showError,
    ended: () => {
      $("record").disabled = false;
      $("stop").disabled = true;
    },
  });
  $("mic-section").hidden = false;
  $("record").addEventListener("click", async () => {
    clearError();
    $("record").disabled = true;
    $("stop").disabled = false;
    await mic.start($("model").value, $("language").value.trim());
  });
  $("stop").addEventListener("click", () => {
    $("stop").disabled = true;
    mic.stop();
  });
}

setupMicrophone();
loadServerInfo();
