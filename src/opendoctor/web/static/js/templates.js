// The rule templates in force (admin): each with where it comes from and how many
// matches it holds in the graph now; one shown as its YAML, as text. The matches follow
// the faults: the list is read again when one opens, changes or clears.
import { ApiError, get, stream } from "./api.js";
import { chosenInAddress, el, keepInAddress } from "./dom.js";

// Faults come in bursts (a host down: its servers with it): one reread per burst.
const COALESCE_MS = 300;

// --- small DOM helpers: text only, never HTML ------------------------------------------

// The first sentence of a description, for the list (the whole one is shown with the YAML).
const SHORT = 160;
function firstSentence(text) {
  const line = (text || "").replace(/\s+/g, " ").trim();
  const cut = line.search(/\.(\s|$)/);
  const sentence = cut >= 0 ? line.slice(0, cut + 1) : line;
  return sentence.length > SHORT ? `${sentence.slice(0, SHORT - 1)}…` : sentence;
}

// --- the page -----------------------------------------------------------------------------

export async function templatesPage(root, live) {
  let templates = [];
  let selected = chosenInAddress("name");
  let flushTimer = null;
  let stopped = false;
  let showToken = 0;

  const count = el("span", { id: "tp-count" });
  const status = el("span", { id: "tp-status", className: "error" });
  root.append(el("div", { className: "toolbar" }, el("strong", {}, "Rule templates in force"), count, status));
  const body = el("tbody");
  const head = el(
    "thead",
    {},
    el("tr", {}, ...["Name", "Origin", "Source", "Scenarios", "Matches", "Description"].map((h) => el("th", {}, h)))
  );
  const shown = el("div", { id: "tp-template" });
  root.append(el("table", { id: "tp-list", className: "grid" }, head, body), shown);

  function say(err) {
    status.textContent = err ? `Could not read the templates: ${err.message}` : "";
  }

  function renderList() {
    count.textContent = `${templates.length} templates`;
    body.replaceChildren(
      ...templates.map((t) => {
        const row = el(
          "tr",
          { dataset: { template: t.name }, tabIndex: 0, className: "pick" },
          el("td", {}, t.name),
          el("td", {}, t.origin),
          el("td", {}, t.source || ""),
          el("td", { className: "number" }, String(t.scenarios)),
          el("td", { className: "number matches" }, String(t.matches)),
          el("td", {}, firstSentence(t.description))
        );
        row.classList.toggle("current", t.name === selected);
        row.setAttribute("aria-selected", String(t.name === selected));
        const choose = () => select(t.name);
        row.addEventListener("click", choose);
        row.addEventListener("keydown", (ev) => {
          if (ev.key === "Enter") choose();
        });
        return row;
      })
    );
    if (!templates.length) body.append(el("tr", {}, el("td", { colSpan: 6 }, "No template is in force.")));
  }

  async function loadList() {
    const found = await get("/v1/templates");
    if (stopped) return;
    templates = found;
    renderList();
  }

  function select(name) {
    selected = name;
    keepInAddress("name", name);
    renderList();
    show().catch(say);
  }

  async function show() {
    if (!selected) return;
    const token = ++showToken;
    const t = await get(`/v1/templates/${encodeURIComponent(selected)}`);
    if (stopped || token !== showToken) return;
    const origin = t.source ? `${t.origin} (${t.source})` : t.origin;
    const facts = `${origin} · ${t.scenarios} scenarios · ${t.matches} matches now`;
    // The YAML is text in a <pre>: shown as written, never interpreted.
    shown.replaceChildren(
      el("h3", {}, t.name),
      el("p", {}, facts),
      el("p", {}, t.description || ""),
      el("pre", { id: "tp-yaml", className: "yaml" }, t.text || "")
    );
    shown.dataset.template = t.name;
  }

  function soon() {
    if (flushTimer === null) flushTimer = setTimeout(flush, COALESCE_MS);
  }

  async function flush() {
    flushTimer = null;
    try {
      await loadList();
      await show(); // its count of matches too
      say(null);
    } catch (err) {
      say(err);
    }
  }

  try {
    await loadList();
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) {
      root.replaceChildren(el("p", {}, "The rule templates are the admins': sign in with the admin role."));
      return () => {};
    }
    throw err;
  }
  if (!selected && templates.length) selected = templates[0].name;
  if (selected) {
    renderList();
    await show().catch(say);
  }

  const stop = stream(["fault.opened", "fault.changed", "fault.cleared", "gap"], soon, (on) => {
    live(on);
    // Nothing is replayed: the matches are read again on each connection.
    if (on) soon();
  });
  return () => {
    stopped = true;
    stop();
    clearTimeout(flushTimer);
  };
}
