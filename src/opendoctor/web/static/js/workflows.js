// Workflow executions, newest first; one execution's tasks drawn as a graph (Cytoscape,
// dagre layout, top to bottom), each task coloured by its state; a click on a task
// shows its input, result, what it published and its timings. New executions and
// state changes arrive through the live stream (`workflow.execution`).
import { get, stream } from "./api.js";
import { chosenInAddress, el, keepInAddress, table } from "./dom.js";

const LIST_LIMIT = 100;
// The stream tells of an execution's start and end, not of each task: while the
// execution shown runs, its tasks are read again this often.
const TASK_REFRESH_MS = 2000;
// Events come in bursts (a rule template starting many runs): one reload per burst.
const COALESCE_MS = 150;
// With-items tasks call their action once per item: the detail shows this many inputs.
const INPUTS_SHOWN = 20;

// Task and execution states -> the dashboard's legend classes and colours (app.css).
const STATE_CLASS = {
  SUCCESS: "ok",
  ERROR: "bad",
  CANCELLED: "bad",
  RUNNING: "maint",
  RUNNING_DELAYED: "maint",
  IDLE: "warn",
  WAITING: "warn",
  PAUSED: "warn",
};
const CLASS_COLOUR = { ok: "#2e7d32", warn: "#f9a825", bad: "#c62828", maint: "#1565c0", none: "#9e9e9e" };
const NOT_RUN = "not run";
const stateClass = (state) => STATE_CLASS[state] || "none";
const stateColour = (state) => (state === NOT_RUN ? "#eceff1" : CLASS_COLOUR[stateClass(state)]);
const EDGE_COLOUR = { "on-success": "#2e7d32", "on-error": "#c62828", "on-complete": "#607d8b", requires: "#607d8b" };

const GRAPH_STYLE = [
  {
    selector: "node",
    style: {
      shape: "round-rectangle",
      "background-color": "data(colour)",
      "border-width": 1,
      "border-color": "#546e7a",
      label: "data(label)",
      "text-valign": "center",
      "font-size": 11,
      width: "data(width)",
      height: 26,
    },
  },
  { selector: "node[state != 'not run']", style: { color: "#fff" } },
  { selector: "node[?command]", style: { shape: "octagon", "font-style": "italic" } },
  { selector: "node:selected", style: { "border-width": 3, "border-color": "#263238" } },
  {
    selector: "edge",
    style: {
      width: 1.5,
      "line-color": "data(colour)",
      "target-arrow-color": "data(colour)",
      "target-arrow-shape": "triangle",
      "curve-style": "bezier",
    },
  },
  { selector: "edge[?guarded]", style: { "line-style": "dashed" } },
];

// --- small DOM helpers: text only, never HTML ------------------------------------------

function stateBadge(state) {
  return el("span", { className: `state ${stateClass(state)}` }, state || "");
}

// A row that selects something on a click or Enter (it takes the keyboard focus).
function selectable(row, onSelect) {
  row.tabIndex = 0;
  row.classList.add("pick");
  row.addEventListener("click", onSelect);
  row.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") onSelect();
  });
  return row;
}

// The API's times are "YYYY-MM-DD HH:MM:SS" in UTC.
function parseTime(text) {
  return text ? new Date(`${text.replace(" ", "T")}Z`) : null;
}

function span(fromText, toText) {
  const from = parseTime(fromText);
  if (!from) return "";
  const to = toText ? parseTime(toText) : new Date();
  const seconds = Math.max(0, Math.round((to - from) / 1000));
  if (seconds < 1) return "<1 s";
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

const FINISHED = new Set(["SUCCESS", "ERROR", "CANCELLED"]);

// An execution's duration: to its last change once it is over, else so far.
function executionDuration(e) {
  return FINISHED.has(e.state) ? span(e.created_at, e.updated_at) : `${span(e.created_at, null)} so far`;
}

// Mistral's API gives inputs and results as JSON text inside the JSON: the value itself.
function parsed(value) {
  if (typeof value !== "string") return value;
  try {
    return JSON.parse(value);
  } catch {
    return value;
  }
}

// A value indented for reading (text that is not JSON as it is).
function pretty(value) {
  const v = parsed(value);
  if (typeof v === "string") return v;
  return v === undefined ? "" : JSON.stringify(v, null, 2);
}

function block(title, value) {
  return el("div", { className: "block" }, el("h4", {}, title), el("pre", {}, pretty(value)));
}

// Register the dagre layout once (its script also registers itself when it loads).
function withDagre() {
  const cy = window.cytoscape;
  if (!cy("layout", "dagre")) cy.use(window.cytoscapeDagre);
  return cy;
}

// --- the graph's elements ---------------------------------------------------------------

// Each task's runs, oldest first: a task reached by two transitions runs twice.
function runsByName(tasks) {
  const runs = new Map();
  for (const t of [...tasks].sort((a, b) => (a.created_at || "").localeCompare(b.created_at || ""))) {
    if (!runs.has(t.name)) runs.set(t.name, []);
    runs.get(t.name).push(t);
  }
  return runs;
}

// Wide enough for the label (Cytoscape's own `width: label` is deprecated).
const nodeWidth = (label) => Math.max(48, 7 * label.length + 18);

// Nodes: every task of the definition (when the API gives the execution's `graph`) and
// every task that ran; edges: the definition's transitions. Without the graph, the
// tasks that ran are drawn unconnected, in the order they started.
function elements(execution, runs) {
  const graph = execution.graph || null;
  const names = [];
  for (const t of graph ? graph.tasks : []) names.push(t.name);
  for (const name of runs.keys()) if (!names.includes(name)) names.push(name);
  const action = new Map((graph ? graph.tasks : []).map((t) => [t.name, t.action || t.workflow || ""]));

  const out = names.map((name) => {
    const mine = runs.get(name) || [];
    const last = mine[mine.length - 1];
    const state = last ? last.state : NOT_RUN;
    const label = mine.length > 1 ? `${name} ×${mine.length}` : name;
    return {
      group: "nodes",
      data: {
        id: name,
        label,
        width: nodeWidth(label),
        state,
        colour: stateColour(state),
        action: action.get(name) || "",
      },
    };
  });
  const known = new Set(names);
  (graph ? graph.transitions : []).forEach((tr, i) => {
    // A target that is no task is an engine command: succeed, fail, pause.
    if (!known.has(tr.target)) {
      known.add(tr.target);
      out.push({
        group: "nodes",
        data: {
          id: tr.target,
          label: tr.target,
          width: nodeWidth(tr.target),
          state: NOT_RUN,
          colour: stateColour(NOT_RUN),
          command: true,
        },
      });
    }
    out.push({
      group: "edges",
      data: {
        id: `${tr.source}|${tr.on}|${tr.target}|${i}`,
        source: tr.source,
        target: tr.target,
        on: tr.on,
        guarded: !!tr.guard,
        colour: EDGE_COLOUR[tr.on] || "#607d8b",
      },
    });
  });
  return out;
}

// --- the page -----------------------------------------------------------------------------

export async function workflowsPage(root, live) {
  let executions = [];
  let selected = chosenInAddress("execution");
  let shown = null; // {execution, tasks, runs} of the execution drawn
  let drawnShape = ""; // the nodes and edges drawn: redrawn (and laid out) only when they change
  let taskShown = null; // name of the task whose detail is open
  let refreshTimer = null;
  let flushTimer = null;
  let reloadAll = false;
  const changed = new Set();
  let stopped = false;
  let detailToken = 0;

  // The frame: a toolbar, the executions on the left, the one selected on the right.
  const count = el("span", { id: "wf-count" });
  const status = el("span", { id: "wf-status", className: "error" });
  const legend = el(
    "span",
    { className: "legend" },
    ...[["ok", "success"], ["maint", "running"], ["warn", "waiting, paused"], ["bad", "error, cancelled"]].map(
      ([cls, text]) => el("span", { className: cls }, text)
    ),
    el("span", { style: { background: "#eceff1", color: "#37474f" } }, NOT_RUN)
  );
  const toolbar = el("div", { className: "toolbar" }, el("strong", {}, "Workflow executions"), count, legend, status);
  root.append(toolbar);

  const list = table("wf-executions", ["Workflow", "State", "Started (UTC)", "Duration"]);
  const title = el("div", { id: "wf-execution" });
  const note = el("p", { id: "wf-note", className: "note" });
  const graphBox = el("div", {
    id: "wf-graph",
    style: { height: "45vh", minHeight: "18em", border: "1px solid #cfd8dc", background: "#fff" },
  });
  const tasks = table("wf-tasks", ["Task", "State", "Started (UTC)", "Finished (UTC)", "Duration"]);
  const detail = el("div", { id: "wf-task" });
  const left = el("div", { style: { flex: "0 0 36em", maxHeight: "calc(100vh - 8em)", overflow: "auto" } }, list.table);
  const right = el("div", { style: { flex: "1 1 auto", minWidth: "0" } }, title, graphBox, note, tasks.table, detail);
  root.append(el("div", { style: { display: "flex", gap: "1em", alignItems: "flex-start" } }, left, right));

  const cy = withDagre()({
    container: graphBox,
    style: GRAPH_STYLE,
    wheelSensitivity: 0.3,
    minZoom: 0.2,
    maxZoom: 1.25, // a small graph is fitted to the box, but not blown up
  });
  // Cytoscape keeps where its box is on the page (to find what a click hits): when what
  // is above the graph changes height, the box moves, and Cytoscape is told.
  const moved = new ResizeObserver(() => cy.resize());
  moved.observe(toolbar);
  moved.observe(title);
  cy.on("tap", "node", (ev) => {
    if (!ev.target.data("command")) showTask(ev.target.id()).catch(say);
  });
  // For the browser tests, as the topology page does.
  window.opendoctorWorkflows = { cy };

  function say(err) {
    status.textContent = err ? `Could not read the workflows: ${err.message}` : "";
  }

  // --- the executions -------------------------------------------------------------------

  function renderList() {
    count.textContent = `${executions.length}${executions.length === LIST_LIMIT ? "+" : ""} executions`;
    const rows = executions.map((e) => {
      const name = e.task_execution_id ? `↳ ${e.workflow_name}` : e.workflow_name;
      const row = el(
        "tr",
        { dataset: { execution: e.id }, title: e.task_execution_id ? `${e.id} (a sub-workflow)` : e.id },
        el("td", {}, name),
        el("td", {}, stateBadge(e.state)),
        el("td", {}, e.created_at || ""),
        el("td", {}, executionDuration(e))
      );
      row.classList.toggle("current", e.id === selected);
      row.setAttribute("aria-selected", String(e.id === selected));
      return selectable(row, () => select(e.id));
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 4 }, "No executions yet.")));
    list.body.replaceChildren(...rows);
  }

  async function loadList() {
    const found = await get(`/v2/executions?sort_dirs=desc&limit=${LIST_LIMIT}`);
    if (stopped) return;
    executions = found.executions || [];
    renderList();
  }

  // --- the execution selected: its graph and its tasks ------------------------------------

  function select(id) {
    selected = id;
    taskShown = null;
    detail.replaceChildren();
    keepInAddress("execution", id);
    renderList();
    loadSelected().catch(say);
  }

  async function loadSelected() {
    clearTimeout(refreshTimer);
    refreshTimer = null;
    if (!selected) return;
    const id = selected;
    const [execution, found] = await Promise.all([
      get(`/v2/executions/${encodeURIComponent(id)}`),
      get(`/v2/tasks?workflow_execution_id=${encodeURIComponent(id)}&limit=1000`),
    ]);
    if (stopped || id !== selected) return;
    // Its row follows too (the duration so far, a state the stream has not told yet).
    const at = executions.findIndex((e) => e.id === id);
    if (at >= 0) {
      executions[at] = execution;
      renderList();
    }
    const taskList = found.tasks || [];
    shown = { execution, tasks: taskList, runs: runsByName(taskList) };
    renderExecution();
    draw();
    renderTasks();
    if (taskShown) showTask(taskShown).catch(say);
    // Cleared again here: two reads may have been under way at once.
    clearTimeout(refreshTimer);
    refreshTimer = FINISHED.has(execution.state) ? null : setTimeout(() => loadSelected().catch(say), TASK_REFRESH_MS);
  }

  function renderExecution() {
    const e = shown.execution;
    const facts = el(
      "p",
      {},
      `${e.id} · started ${e.created_at || "?"} UTC · ${executionDuration(e)} · project ${e.project_id}`
    );
    const parts = [el("h3", {}, e.workflow_name, " ", stateBadge(e.state)), facts];
    if (e.state_info) parts.push(el("p", { className: "error" }, e.state_info));
    if (e.description) parts.push(el("p", {}, e.description));
    parts.push(
      el("details", {}, el("summary", {}, "Input and output"), block("Input", e.input), block("Output", e.output))
    );
    title.replaceChildren(...parts);
    title.dataset.execution = e.id;
    title.dataset.state = e.state;
  }

  function draw() {
    const out = elements(shown.execution, shown.runs);
    const shape = out.map((x) => x.data.id).join("\n");
    cy.batch(() => {
      if (shape !== drawnShape) {
        cy.elements().remove();
        cy.add(out);
      } else {
        // Same tasks: only their states changed; keep the layout where it is.
        for (const x of out) cy.getElementById(x.data.id).data(x.data);
      }
    });
    if (shape !== drawnShape) {
      cy.layout({ name: "dagre", rankDir: "TB", nodeSep: 30, rankSep: 40, padding: 20, animate: false }).run();
      drawnShape = shape;
    }
    if (taskShown) cy.getElementById(taskShown).select();
    note.textContent = shown.execution.graph
      ? ""
      : "The transitions between tasks are not given by this service: the tasks that ran are shown unconnected.";
    graphBox.dataset.execution = shown.execution.id;
    graphBox.dataset.drawn = String(cy.nodes().length);
  }

  function renderTasks() {
    const rows = [];
    for (const [name, runs] of shown.runs) {
      runs.forEach((t, i) => {
        const label = runs.length > 1 ? `${name} (${i + 1})` : name;
        const row = el(
          "tr",
          { dataset: { task: name } },
          el("td", {}, label),
          el("td", {}, stateBadge(t.state)),
          el("td", {}, t.started_at || ""),
          el("td", {}, t.finished_at || ""),
          el("td", {}, t.started_at ? span(t.started_at, t.finished_at) : "")
        );
        rows.push(selectable(row, () => showTask(name).catch(say)));
      });
    }
    if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 5 }, "No task has started.")));
    tasks.body.replaceChildren(...rows);
  }

  // --- one task: input, result, published, timings ---------------------------------------

  async function taskInput(task) {
    if (task.type === "WORKFLOW") {
      const subs = await get(`/v2/executions?task_execution_id=${encodeURIComponent(task.id)}`);
      return (subs.executions || []).map((s) => s.input);
    }
    const query = `task_execution_id=${encodeURIComponent(task.id)}&limit=${INPUTS_SHOWN}`;
    const calls = await get(`/v2/action_executions?${query}`);
    return (calls.action_executions || []).map((a) => a.input);
  }

  async function showTask(name) {
    taskShown = name;
    const token = ++detailToken;
    cy.nodes().unselect();
    cy.getElementById(name).select();
    const runs = (shown && shown.runs.get(name)) || [];
    const last = runs[runs.length - 1];
    if (!last) {
      const node = cy.getElementById(name);
      detail.replaceChildren(
        el("h3", {}, name, " ", stateBadge(NOT_RUN)),
        el("p", {}, node.nonempty() && node.data("action") ? `calls ${node.data("action")}` : "It has not run.")
      );
      detail.dataset.task = name;
      return;
    }
    const [task, inputs] = await Promise.all([get(`/v2/tasks/${encodeURIComponent(last.id)}`), taskInput(last)]);
    if (stopped || token !== detailToken) return;
    const timing = el(
      "p",
      { className: "timing" },
      `started ${task.started_at || "—"} · finished ${task.finished_at || "—"} · took ${
        task.started_at ? span(task.started_at, task.finished_at) : "—"
      }${runs.length > 1 ? ` · ran ${runs.length} times (the last shown)` : ""}`
    );
    const parts = [el("h3", {}, name, " ", stateBadge(task.state)), timing];
    if (task.state_info) parts.push(el("p", { className: "error" }, task.state_info));
    // One call (most tasks): its input; a with-items task: each call's.
    const input = inputs.length === 1 ? inputs[0] : inputs.map(parsed);
    const some = inputs.length === INPUTS_SHOWN ? "the first " : "";
    parts.push(
      block(inputs.length > 1 ? `Input (${some}${inputs.length} calls)` : "Input", inputs.length ? input : null),
      block("Result", task.result),
      block("Published", task.published)
    );
    detail.replaceChildren(...parts);
    detail.dataset.task = name;
  }

  // --- live -------------------------------------------------------------------------------

  // Reread what the events said changed, once per burst.
  function soon(id) {
    if (id) changed.add(id);
    else reloadAll = true;
    if (flushTimer === null) flushTimer = setTimeout(flush, COALESCE_MS);
  }

  async function flush() {
    flushTimer = null;
    const all = reloadAll;
    const ids = new Set(changed);
    changed.clear();
    reloadAll = false;
    try {
      await loadList();
      // Nothing chosen yet: the newest is shown, as when the page opens.
      if (!selected && executions.length) select(executions[0].id);
      else if (selected && (all || ids.has(selected))) await loadSelected();
      say(null);
    } catch (err) {
      say(err);
    }
  }

  await loadList();
  if (!selected && executions.length) selected = executions[0].id;
  if (selected) {
    renderList();
    await loadSelected().catch(say);
  }

  const stop = stream(
    ["workflow.execution", "gap"],
    (kind, ev) => soon(kind === "gap" ? null : ev.id),
    (on) => {
      live(on);
      // Nothing is replayed: what changed before this connection is read again.
      if (on) soon(null);
    }
  );
  return () => {
    stopped = true;
    stop();
    clearTimeout(refreshTimer);
    clearTimeout(flushTimer);
    moved.disconnect();
    cy.destroy();
    delete window.opendoctorWorkflows;
  };
}
