// The API as the pages call it: with the signed-in identity, which this tab keeps
// (sessionStorage) and never sends anywhere but here.

const KEY = "opendoctor.identity";

export function identity() {
  const raw = sessionStorage.getItem(KEY);
  return raw ? JSON.parse(raw) : null;
}

export function signIn(given) {
  sessionStorage.setItem(KEY, JSON.stringify(given));
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

export function isAdmin() {
  const who = identity();
  return !!who && (who.roles || "").split(",").map((r) => r.trim()).includes("admin");
}

function headers() {
  const who = identity() || {};
  if (who.token) return { "X-Auth-Token": who.token };
  const out = {};
  if (who.project) out["X-Project-Id"] = who.project;
  if (who.roles) out["X-Roles"] = who.roles;
  out["X-User-Id"] = who.user || "dashboard";
  return out;
}

export class ApiError extends Error {
  constructor(status, body) {
    // This API answers {"error": {"message"}}; some routes (FastAPI's) {"detail"}.
    super(body?.error?.message || body?.detail || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export async function get(path) {
  const resp = await fetch(path, { headers: headers() });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

// Server-sent events from /v1/stream, through fetch (EventSource cannot send the
// identity headers). Calls onEvent(kind, data) for each; reconnects after a drop.
export function stream(kinds, onEvent, onState) {
  let stopped = false;
  const controller = new AbortController();
  async function run() {
    while (!stopped) {
      try {
        const query = kinds.length ? `?kinds=${encodeURIComponent(kinds.join(","))}` : "";
        const resp = await fetch(`/v1/stream${query}`, { headers: headers(), signal: controller.signal });
        if (!resp.ok || !resp.body) throw new ApiError(resp.status, null);
        onState(true);
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            let kind = "message";
            const data = [];
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) kind = line.slice(6).trim();
              else if (line.startsWith("data:")) data.push(line.slice(5).trim());
            }
            if (data.length) onEvent(kind, JSON.parse(data.join("\n")));
          }
        }
      } catch (err) {
        if (stopped) return;
      }
      onState(false);
      await new Promise((done) => setTimeout(done, 1000));
    }
  }
  run();
  return () => {
    stopped = true;
    controller.abort();
  };
}
