// Calls to the stts API: the key (kept in this tab's sessionStorage), errors as the
// server's own JSON message.

const KEY = "stts-api-key";

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }

  // What the page shows: the server's message, and when to retry if it said.
  get text() {
    let text = `${this.message}`;
    if (this.status) text = `Error ${this.status}: ${text}`;
    if (this.retryAfter) text += ` — retry in ${this.retryAfter} s`;
    return text;
  }
}

function withKey(init = {}) {
  const headers = new Headers(init.headers || {});
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return { ...init, headers };
}

// An error answer as an ApiError carrying the server's `error.message`.
export async function toError(response) {
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch {
    // not JSON (a proxy's page): keep the status text
  }
  return new ApiError(response.status, message, response.headers.get("Retry-After"));
}

// fetch() with the key; an answer other than 2xx is thrown as an ApiError.
export async function api(path, init) {
  let response;
  try {
    response = await fetch(path, withKey(init));
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, `the server could not be reached (${err.message})`);
  }
  if (!response.ok) throw await toError(response);
  return response;
}

// Server-sent events of a streamed answer, one parsed JSON object at a time.
export async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data) yield JSON.parse(data);
    }
  }
}
