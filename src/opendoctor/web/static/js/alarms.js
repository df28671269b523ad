// Active alarms, counted by severity, and what each is part of.
//
// An admin sees the alarms of the entity graph (`/v1/alarms`: faults' alarms and those
// the rule templates deduce from them); a click on one draws its causal chain, causes
// and effects, as a graph (`/v1/rca/...`), and the newest raise/clear records are listed
// below. A project's user sees its own Aodh alarms that are firing (`/v2/alarms`):
// root-cause graphs run through hosts, switches and other projects' servers, which the
// API shows only to admins, so a click shows the alarm's own state history instead.
import { ApiError, get, identity, isAdmin, stream } from "./api.js";
import { cells, chosenInAddress, el, keepInAddress, table, when } from "./dom.js";

const HISTORY = 100;
// Live events come in bursts (a host's fault raises an alarm per server): one reload
// per burst.
const SETTLE_MS = 300;

const ORDER = ["CRITICAL", "SEVERE", "WARNING", "OK", "N/A"];
// Worst first; a severity of no known name last.
const rank = (severity) => {
  const i = ORDER.indexOf(AODH[severity] || severity);
  return i < 0 ? ORDER.length : i;
};
// Aodh's severities, as a project's alarms carry them, on the graph's scale.
const AODH = { critical: "CRITICAL", moderate: "SEVERE", low: "WARNING" };

function sevClass(severity) {
  const s = AODH[severity] || severity;
  return `sev sev-${String(s || "n-a").toLowerCase().replace(/[^a-z]/g, "-")}`;
}

function colour(severity) {
  switch (AODH[severity] || severity) {
    case "CRITICAL": return "#c62828";
    case "SEVERE": return "#ef6c00";
    case "WARNING": return "#f9a825";
    case "OK": return "#2e7d32";
    default: return "#9e9e9e";
  }
}

// Aodh's timestamps are ISO 8601 in UTC, without the zone.
function whenIso(text) {
  if (!text) return "";
  const at = new Date(/[zZ]|[+-]\d\d:\d\d$/.test(text) ? text : `${text}Z`);
  return Number.isNaN(at.getTime()) ? text : at.toLocaleString();
}

function badge(severity, text) {
  return el("span", { className: sevClass(severity), textContent: text ?? severity });
}

function showCounts(box, counts) {
  const known = Object.keys(counts).sort((a, b) => rank(a) - rank(b));
  const total = known.reduce((n, k) => n + counts[k], 0);
  box.replaceChildren(el("span", { textContent: `${total} active` }));
  for (const k of known) {
    const b = badge(k, `${k} ${counts[k]}`);
    b.dataset.severity = k;
    b.dataset.count = String(counts[k]);
    box.append(b);
  }
}

function debounced(fn) {
  let timer = null;
  const call = () => {
    clearTimeout(timer);
    timer = setTimeout(fn, SETTLE_MS);
  };
  call.cancel = () => clearTimeout(timer);
  return call;
}

// ---------------------------------------------------------------------------------------
// An admin: the graph's alarms, their causal chains, their history.

const RCA_STYLE = [
  {
    selector: "node",
    style: {
      shape: "round-rectangle", "background-color": "data(colour)", label: "data(label)",
      color: "#fff", "font-size": 10, "text-wrap": "wrap", "text-max-width": 150,
      "text-valign": "center", "text-halign": "center", width: 160, height: 44,
    },
  },
  { selector: "node[?chosen]", style: { "border-width": 3, "border-color": "#263238" } },
  { selector: "node[?deduced]", style: { "border-style": "dashed", "border-width": 2, "border-color": "#fff" } },
  {
    selector: "edge",
    style: {
      width: 2, "line-color": "#90a4ae", "target-arrow-color": "#90a4ae",
      "target-arrow-shape": "triangle", "curve-style": "bezier", label: "causes", "font-size": 8,
    },
  },
];

// Cytoscape's UMD builds of the layouts register themselves when loaded after it;
// register dagre here only if that did not happen (a build that does not).
function withDagre() {
  const cy = window.cytoscape;
  if (!cy("layout", "dagre")) cy.use(window.cytoscapeDagre);
  return cy;
}

async function adminPage(root, live, first) {
  const counts = el("div", { id: "alarm-counts", className: "toolbar" });
  const list = table("alarm-table", ["severity", "alarm", "on", "caused by", "kind", "since"]);
  const chainTitle = el("h3", { textContent: "Causal chain" });
  const chainNote = el("p", { id: "rca-note", className: "note", textContent: "Click an alarm to see what caused it and what it causes." });
  const graph = el("div", { id: "rca" });
  // Cytoscape draws into a box of the size its container has: give it one.
  graph.style.height = "22em";
  graph.style.border = "1px solid #cfd8dc";
  graph.style.background = "#fff";
  const past = table("alarm-history", ["time", "change", "alarm", "severity", "on", "caused by"]);
  root.append(
    el("h2", { textContent: "Alarms" }), counts, list.table,
    el("section", { id: "rca-section" }, chainTitle, chainNote, graph),
    el("section", {}, el("h3", { textContent: `History (newest ${HISTORY} raised and cleared)` }), past.table),
  );

  // maxZoom: an alarm with neither cause nor effect is one box, not a wall of red.
  const cy = withDagre()({ container: graph, style: RCA_STYLE, maxZoom: 1.5, autoungrabify: true });
  let alarms = new Map(first.alarms.map((a) => [a.key, a])); // key -> alarm
  let chosen = chosenInAddress("key");
  let drawing = 0; // the newest draw wins over a slower one

  function label(key) {
    const a = alarms.get(key);
    return a ? `${a.name} on ${a.on || "?"}` : key;
  }

  function showList(body) {
    alarms = new Map(body.alarms.map((a) => [a.key, a]));
    showCounts(counts, body.counts || {});
    list.body.replaceChildren();
    // Worst first, then newest.
    const rows = [...body.alarms].sort((a, b) => rank(a.state) - rank(b.state) || (b.updated || 0) - (a.updated || 0));
    for (const a of rows) {
      const row = cells(el("tr"), [
        badge(a.state), a.name, a.on, a.caused_by ? label(a.caused_by) : "",
        a.deduced ? `deduced (${a.template || "template"})` : "fault", when(a.updated),
      ]);
      row.dataset.key = a.key;
      row.dataset.name = a.name;
      if (a.on) row.dataset.on = a.on;
      row.classList.add("pick");
      row.classList.toggle("current", a.key === chosen);
      row.onclick = () => {
        chosen = a.key;
        keepInAddress("key", chosen);
        for (const r of list.body.children) r.classList.toggle("current", r === row);
        drawChain().catch((err) => { chainNote.textContent = `Could not draw the chain: ${err.message}`; });
      };
      list.body.append(row);
    }
    if (!rows.length) list.body.append(el("tr", {}, el("td", { colSpan: 6, textContent: "No active alarms." })));
    past.body.replaceChildren();
    for (const h of body.history || []) {
      past.body.append(cells(el("tr"), [when(h.time), h.change, h.name, badge(h.severity), h.on, h.caused_by ? label(h.caused_by) : ""]));
    }
  }

  // The chosen alarm, what caused it and what it causes. The RCA answer says which
  // alarms those are; the edges between them (an alarm may have several causes) are
  // the graph's `causes` edges, read from the alarms' part of the topology.
  async function drawChain() {
    const mine = ++drawing;
    if (!chosen) return;
    let rca, part;
    try {
      [rca, part] = await Promise.all([
        get(`/v1/rca/${encodeURIComponent(chosen)}`),
        get(`/v1/topology?${new URLSearchParams({ query: JSON.stringify({ "==": { category: "ALARM" } }) })}`),
      ]);
    } catch (err) {
      if (mine !== drawing) return;
      if (!(err instanceof ApiError) || err.status !== 404) throw err;
      cy.elements().remove();
      delete graph.dataset.drawn;
      chainNote.textContent = `${label(chosen)} has cleared.`;
      return;
    }
    if (mine !== drawing) return;
    const members = [...rca.causes, rca.alarm, ...rca.effects];
    const keys = new Set(members.map((v) => v.key));
    const nodes = members.map((v) => ({
      group: "nodes",
      data: {
        id: v.key,
        label: `${v.name}\n${v.on ? v.on.name || v.on.key : "?"}`,
        colour: colour(v.state),
        chosen: v.key === rca.alarm.key,
        deduced: !!(alarms.get(v.key) || {}).deduced,
      },
    }));
    const edges = part.edges
      .filter((e) => e.label === "causes" && keys.has(e.source) && keys.has(e.target))
      .map((e) => ({ group: "edges", data: { id: `${e.source}>${e.target}`, source: e.source, target: e.target } }));
    cy.startBatch();
    cy.elements().remove();
    cy.add([...nodes, ...edges]);
    cy.endBatch();
    // Causes to the left, effects to the right.
    cy.layout({ name: "dagre", rankDir: "LR", nodeSep: 20, rankSep: 60, animate: false }).run();
    cy.fit(undefined, 20);
    chainTitle.textContent = `Causal chain of ${rca.alarm.name} on ${rca.alarm.on ? rca.alarm.on.name : "?"}`;
    chainNote.textContent =
      `Root cause: ${rca.root_cause.name} on ${rca.root_cause.on ? rca.root_cause.on.name : "?"}; ` +
      `${rca.causes.length} cause(s), ${rca.effects.length} effect(s). Dashed: deduced by a template.`;
    graph.dataset.drawn = String(cy.nodes().length);
  }

  async function reload() {
    showList(await get(`/v1/alarms?history=${HISTORY}`));
    if (chosen) await drawChain();
  }
  const refresh = debounced(() => reload().catch((err) => { chainNote.textContent = `Could not reload: ${err.message}`; }));

  showList(first);
  if (chosen) await drawChain().catch((err) => { chainNote.textContent = `Could not draw the chain: ${err.message}`; });
  const stop = stream(["fault.opened", "fault.changed", "fault.cleared", "graph.vertex", "graph.removed", "gap"], (kind, ev) => {
    // Of the graph's changes, only alarms' count here (an alarm removed has cleared).
    if (kind === "graph.vertex" && ev.type !== "alarm") return;
    if (kind === "graph.removed" && !ev.key.startsWith("alarm:")) return;
    refresh();
  }, live);
  return () => {
    stop();
    refresh.cancel();
    cy.destroy();
  };
}

// ---------------------------------------------------------------------------------------
// A project's user: its own alarms that are firing, and one's history.

async function projectPage(root, live) {
  const counts = el("div", { id: "alarm-counts", className: "toolbar" });
  const list = table("alarm-table", ["severity", "alarm", "why", "since"]);
  const note = el("p", {
    className: "note",
    textContent: "Your project's alarms in state alarm. Root-cause graphs run through the " +
      "infrastructure (hosts, switches, other projects' servers), which only admins see: " +
      "click an alarm for its own history instead.",
  });
  const pastTitle = el("h3", { textContent: "History" });
  const past = table("alarm-history", ["time", "type", "detail"]);
  root.append(el("h2", { textContent: "Alarms" }), counts, list.table, note, el("section", {}, pastTitle, past.table));
  let chosen = chosenInAddress("alarm");

  async function showHistory() {
    if (!chosen) return;
    const rows = await get(`/v2/alarms/${encodeURIComponent(chosen)}/history`);
    past.body.replaceChildren();
    for (const h of rows) {
      let detail = h.detail;
      try {
        const parsed = typeof detail === "string" ? JSON.parse(detail) : detail;
        if (parsed && parsed.state) detail = `state ${parsed.state}`;
      } catch (err) {
        // Not JSON: shown as it is.
      }
      past.body.append(cells(el("tr"), [whenIso(h.timestamp), h.type, typeof detail === "string" ? detail : JSON.stringify(detail)]));
    }
  }

  async function load() {
    const firing = await get("/v2/alarms?" + new URLSearchParams({ "q.field": "state", "q.op": "eq", "q.value": "alarm" }));
    const tally = {};
    for (const a of firing) tally[a.severity] = (tally[a.severity] || 0) + 1;
    showCounts(counts, tally);
    list.body.replaceChildren();
    for (const a of firing) {
      const row = cells(el("tr"), [badge(a.severity), a.name, a.state_reason, whenIso(a.state_timestamp)]);
      row.dataset.alarmId = a.alarm_id;
      row.dataset.project = a.project_id;
      row.classList.add("pick");
      row.classList.toggle("current", a.alarm_id === chosen);
      row.onclick = () => {
        chosen = a.alarm_id;
        keepInAddress("alarm", chosen);
        for (const r of list.body.children) r.classList.toggle("current", r === row);
        pastTitle.textContent = `History of ${a.name}`;
        showHistory().catch((err) => { pastTitle.textContent = `Could not read the history: ${err.message}`; });
      };
      list.body.append(row);
    }
    if (!firing.length) list.body.append(el("tr", {}, el("td", { colSpan: 4, textContent: "No alarm of yours is firing." })));
    list.table.dataset.loaded = String(firing.length);
    await showHistory();
  }
  const refresh = debounced(() => load().catch((err) => { note.textContent = `Could not reload: ${err.message}`; }));

  await load();
  // A project hears only of its own servers and their faults; a server of its turning
  // to error is what fires its alarms.
  const stop = stream(["fault.opened", "fault.changed", "fault.cleared", "graph.vertex", "gap"], () => refresh(), live);
  return () => {
    stop();
    refresh.cancel();
  };
}

export async function alarmsPage(root, live) {
  // With the identity headers, the roles are known here: a project's user is not sent
  // to the admin's routes only to be refused. A token's roles are the API's to know.
  const who = identity() || {};
  if (!who.token && !isAdmin()) return projectPage(root, live);
  let first;
  try {
    first = await get(`/v1/alarms?history=${HISTORY}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) return projectPage(root, live);
    throw err;
  }
  return adminPage(root, live, first);
}
