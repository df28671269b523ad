// The entity graph: hosts, servers, switches, racks, feeds, coloured by state,
// filtered by type, project or a query, kept current by the live stream. A graph too
// big to draw whole shows each host with its servers folded in (a count, the worst
// state); a click unfolds one.
import { get, stream } from "./api.js";

// Past this many vertices, servers are folded into their hosts.
const FOLD_OVER = 1500;
const CONTAINS = "contains";

function colour(state, raw) {
  if ((raw || "").toLowerCase() === "maintenance") return "#1565c0";
  switch (state) {
    case "OK": return "#2e7d32";
    // Alarms' severities beside resources' states.
    case "SUBOPTIMAL": case "TRANSIENT": case "WARNING": return "#f9a825";
    case "ERROR": case "DELETED": case "CRITICAL": case "SEVERE": return "#c62828";
    default: return "#9e9e9e";
  }
}

const RANK = { ERROR: 4, DELETED: 4, SUBOPTIMAL: 3, TRANSIENT: 2, OK: 1 };
const worse = (a, b) => ((RANK[a] || 0) >= (RANK[b] || 0) ? a : b);

function toolbar(root, types, onChange) {
  const bar = document.createElement("div");
  bar.className = "toolbar";
  const type = document.createElement("select");
  type.name = "type";
  for (const t of ["", ...types]) {
    const opt = document.createElement("option");
    opt.value = t;
    opt.textContent = t || "every type";
    type.append(opt);
  }
  const project = Object.assign(document.createElement("input"), { name: "project", placeholder: "project" });
  const query = Object.assign(document.createElement("input"), {
    name: "query",
    placeholder: '{"in": {"state": ["error"]}}  (the API\'s query)',
  });
  const apply = Object.assign(document.createElement("button"), { type: "button", textContent: "Filter" });
  const count = document.createElement("span");
  count.id = "count";
  const legend = document.createElement("span");
  legend.className = "legend";
  for (const [cls, label] of [["ok", "ok"], ["warn", "degraded"], ["bad", "error"], ["maint", "maintenance"], ["none", "unknown"]]) {
    const s = document.createElement("span");
    s.className = cls;
    s.textContent = label;
    legend.append(s);
  }
  apply.onclick = () => onChange({ type: type.value, project: project.value.trim(), query: query.value.trim() });
  bar.append(type, project, query, apply, count, legend);
  const banner = document.createElement("div");
  banner.id = "banner";
  const graph = document.createElement("div");
  graph.id = "graph";
  root.append(bar, banner, graph);
  return { count, banner, graph };
}

function node(v, extra = {}) {
  return {
    group: "nodes",
    data: {
      id: v.key, label: v.name || v.id, type: v.type, project: v.project || "",
      state: v.state, raw: v.raw_state, colour: colour(v.state, v.raw_state), ...extra,
    },
  };
}

// The elements to draw: every vertex, or (over FOLD_OVER) servers folded into hosts.
function elements(data, unfolded) {
  const vertices = data.vertices;
  const fold = vertices.length > FOLD_OVER;
  const hostOf = new Map();
  if (fold) {
    for (const e of data.edges) {
      if (e.label === CONTAINS && e.source.startsWith("host:") && e.target.startsWith("server:")) {
        hostOf.set(e.target, e.source);
      }
    }
  }
  const folded = new Map(); // host key -> {count, state}
  const shown = new Set();
  const out = [];
  for (const v of vertices) {
    const host = hostOf.get(v.key);
    if (host && !unfolded.has(host)) {
      const f = folded.get(host) || { count: 0, state: "OK" };
      f.count += 1;
      f.state = worse(f.state, v.state);
      folded.set(host, f);
      continue;
    }
    shown.add(v.key);
  }
  for (const v of vertices) {
    if (!shown.has(v.key)) continue;
    const f = folded.get(v.key);
    if (f) {
      const state = worse(v.state, f.state);
      out.push(node(v, { label: `${v.name} · ${f.count}`, folded: f.count, colour: colour(state, v.raw_state) }));
    } else {
      out.push(node(v));
    }
  }
  for (const e of data.edges) {
    if (shown.has(e.source) && shown.has(e.target)) {
      out.push({ group: "edges", data: { id: `${e.source}|${e.label}|${e.target}`, source: e.source, target: e.target, label: e.label } });
    }
  }
  return { out, folded: fold };
}

const STYLE = [
  { selector: "node", style: { "background-color": "data(colour)", label: "data(label)", "font-size": 9, width: 14, height: 14 } },
  { selector: "node[type = 'host']", style: { shape: "round-rectangle", width: 26, height: 18 } },
  { selector: "node[folded]", style: { width: 34, height: 22 } },
  { selector: "node[type = 'switch'], node[type = 'rack'], node[type = 'feed']", style: { shape: "diamond", width: 22, height: 22 } },
  { selector: "edge", style: { width: 1, "line-color": "#b0bec5", "curve-style": "haystack" } },
];

export async function topologyPage(root, live) {
  let filter = { type: "", project: "", query: "" };
  const unfolded = new Set();
  let data = { vertices: [], edges: [] };
  const started = performance.now();
  const ui = toolbar(root, ["host", "server", "switch", "rack", "feed", "port"], (f) => {
    filter = f;
    load();
  });
  const cy = window.cytoscape({ container: ui.graph, style: STYLE, wheelSensitivity: 0.3, minZoom: 0.05 });

  function draw() {
    const { out, folded } = elements(data, unfolded);
    cy.startBatch();
    cy.elements().remove();
    cy.add(out);
    cy.endBatch();
    const many = cy.nodes().length > 400;
    cy.layout(many ? { name: "grid", avoidOverlap: true } : { name: "fcose", animate: false, randomize: true }).run();
    ui.count.textContent = `${data.vertices.length} entities` + (folded ? " (servers folded into their hosts: click one)" : "");
    // Once the frame with the graph is on screen: paintedAt counts from the navigation's
    // start (the benchmark's first paint), firstPaint from the page's own start.
    requestAnimationFrame(() => {
      const now = performance.now();
      window.opendoctorTopology = { firstPaint: now - started, paintedAt: now, nodes: cy.nodes().length, cy };
      ui.graph.dataset.drawn = String(cy.nodes().length);
    });
  }

  async function load() {
    const params = new URLSearchParams();
    const terms = [];
    if (filter.type) terms.push({ "==": { type: filter.type } });
    if (filter.project) terms.push({ "==": { project: filter.project } });
    if (filter.query) terms.push(JSON.parse(filter.query));
    if (terms.length) params.set("query", JSON.stringify(terms.length === 1 ? terms[0] : { and: terms }));
    data = await get(`/v1/topology${params.size ? `?${params}` : ""}`);
    draw();
  }

  cy.on("tap", "node[folded]", (ev) => {
    unfolded.add(ev.target.id());
    draw();
  });

  function say(text) {
    const line = document.createElement("span");
    line.className = "event";
    line.textContent = `${new Date().toLocaleTimeString()} ${text}`;
    ui.banner.prepend(line);
    while (ui.banner.children.length > 5) ui.banner.lastChild.remove();
  }

  await load();
  const stop = stream(["graph.vertex", "graph.removed", "graph.edge", "fault.opened", "fault.cleared", "gap"], (kind, ev) => {
    if (kind === "gap") return load();
    if (kind === "fault.opened") return say(`fault: ${ev.type} on ${ev.hostname}${ev.instance_id ? ` (${ev.instance_id})` : ""}`);
    if (kind === "fault.cleared") return say(`cleared: ${ev.type} on ${ev.hostname}`);
    if (kind === "graph.vertex") {
      const found = cy.getElementById(ev.key);
      if (found.nonempty()) {
        found.data({ state: ev.state, raw: ev.raw_state, colour: colour(ev.state, ev.raw_state) });
      } else if (!filter.type && !filter.project && !filter.query) {
        cy.add(node({ ...ev, id: ev.key }));
      }
    } else if (kind === "graph.removed") {
      cy.getElementById(ev.key).remove();
    } else if (kind === "graph.edge") {
      // The labels between the two now: an empty list, the edge is gone.
      const labels = ev.labels || [];
      cy.edges().filter((e) => e.data("source") === ev.source && e.data("target") === ev.target
        && !labels.includes(e.data("label"))).remove();
      for (const label of labels) {
        const id = `${ev.source}|${label}|${ev.target}`;
        if (cy.getElementById(id).empty() && cy.getElementById(ev.source).nonempty() && cy.getElementById(ev.target).nonempty()) {
          cy.add({ group: "edges", data: { id, source: ev.source, target: ev.target, label } });
        }
      }
    }
  }, live);
  return () => {
    stop();
    cy.destroy();
  };
}
