// Faults, newest first, and one fault's handling: its timeline (each checkpoint's time
// since the fault was injected, T00, or else detected, T01) as a bar chart, the owners
// told with each notification's delivery, and what became of each server.
//
// Faults are the infrastructure's: the API shows them to admins only (`/v1/faults`). A
// project's user is told so and pointed at its alarms, which fire when a fault hits its
// servers.
import { ApiError, get, identity, isAdmin, stream } from "./api.js";
import { cells, chosenInAddress, el, keepInAddress, table, when } from "./dom.js";

// A fault changes in bursts (several checkpoints within a few milliseconds): one
// re-read of its notifications and recovery per burst.
const SETTLE_MS = 250;
// Bars by phase (DESIGN §4): detection, containment, notification, recovery.
const PHASES = [
  [["T00", "T01", "T02"], "#546e7a"],
  [["T03", "T04", "T05", "T06", "T07", "T08"], "#f9a825"],
  [["T09"], "#2e7d32"],
  [["T10", "T11"], "#1565c0"],
];

function phaseColour(checkpoint) {
  const found = PHASES.find(([names]) => names.includes(checkpoint));
  return found ? found[1] : "#9e9e9e";
}

function ms(seconds) {
  return seconds == null ? "" : `${(seconds * 1000).toFixed(0)} ms`;
}

function status(text) {
  return el("span", { className: `status status-${String(text || "").replace(/[^a-z]/gi, "-")}`, textContent: text || "" });
}

// When a fault began, from an event that carries its trace only.
function startOf(fault) {
  if (fault.started) return fault.started;
  const times = Object.values(fault.trace || {});
  return fault.trace && fault.trace.T01 ? fault.trace.T01 : times.length ? Math.min(...times) : null;
}

function where(fault) {
  return fault.instance_id ? `${fault.hostname} / ${fault.instance_id}` : fault.hostname;
}

// The chart's bars: every checkpoint reached, in order, as time since the origin (T00
// where the fault was injected by a test or a drill, else T01); milliseconds while the
// whole handling took under ten seconds, seconds after.
function bars(trace, labels) {
  const names = Object.keys(trace).sort();
  const origin = "T00" in trace ? "T00" : "T01" in trace ? "T01" : names[0];
  const base = trace[origin];
  const span = Math.max(0, ...names.map((n) => trace[n] - base));
  const unit = span < 10 ? { name: "ms", k: 1000 } : { name: "s", k: 1 };
  return {
    names,
    labels: names.map((n) => (labels[n] ? `${n} ${labels[n]}` : n)),
    values: names.map((n) => (trace[n] - base) * unit.k),
    colours: names.map(phaseColour),
    axis: `${unit.name} since ${origin}${labels[origin] ? ` (${labels[origin]})` : ""}`,
    unit: unit.name,
  };
}

// Bars stay readable whatever their number: the chart's box grows with them.
const BAR_PX = 26;
const AXES_PX = 60;

function deniedPage(root, live, message) {
  live(false); // nothing follows the stream here
  root.append(
    el("h2", { textContent: "Faults" }),
    el("p", { id: "faults-denied", className: "note" }, message, " Your project's alarms, which fire when a fault hits your servers, are on the ", el("a", { href: "#/alarms", textContent: "Alarms" }), " page."),
  );
  return () => {};
}

async function adminPage(root, live, first) {
  const list = table("fault-table", ["type", "host / instance", "status", "started"]);
  const detail = el("section", { id: "fault-detail", hidden: true });
  const title = el("h3");
  const summary = el("p", { id: "fault-summary" });
  const canvas = el("canvas", { id: "fault-chart" });
  const box = el("div", {}, canvas);
  // Chart.js sizes its canvas to its container (responsive, no fixed aspect ratio), so
  // the container's height is what makes room for the bars.
  box.style.position = "relative";
  box.style.maxWidth = "60em";
  const owners = table("owners", ["server", "alarm", "consumer", "delivery", "attempts", "after", "error"]);
  const recovery = table("recovery", ["server", "from", "to", "result", "action", "attempts", "serving after", "error"]);
  detail.append(
    title, summary, box,
    el("h4", { textContent: "Owners told" }), owners.table,
    el("h4", { textContent: "Recovery" }), recovery.table,
  );
  root.append(el("h2", { textContent: "Faults" }), list.table, detail);

  const rows = new Map(); // fault id -> its row
  let chosen = chosenInAddress("id");
  let shown = null; // the chosen fault as last read
  let labels = {}; // checkpoint -> what it means, as the API names them
  let chart = null;
  let unit = "ms"; // of the chart's values, for its tooltips
  let reading = 0;

  function statusCell(row, fault) {
    row.dataset.status = fault.status;
    row.children[2].replaceChildren(status(fault.status));
  }

  function addRow(fault, atTop) {
    const row = cells(el("tr"), [fault.type, where(fault), "", when(startOf(fault))]);
    row.dataset.faultId = fault.id;
    row.dataset.host = fault.hostname;
    row.classList.add("pick");
    row.classList.toggle("current", fault.id === chosen);
    statusCell(row, fault);
    row.onclick = () => {
      chosen = fault.id;
      keepInAddress("id", chosen);
      for (const r of rows.values()) r.classList.toggle("current", r === row);
      readChosen();
    };
    rows.get(fault.id)?.remove();
    rows.set(fault.id, row);
    list.body.querySelector("tr.empty")?.remove();
    if (atTop) list.body.prepend(row);
    else list.body.append(row);
  }

  function showList(faults) {
    rows.clear();
    list.body.replaceChildren();
    for (const f of faults) addRow(f, false);
    if (!faults.length) list.body.append(el("tr", { className: "empty" }, el("td", { colSpan: 4, textContent: "No faults." })));
  }

  function drawChart(trace) {
    const b = bars(trace, labels);
    box.style.height = `${AXES_PX + BAR_PX * Math.max(b.names.length, 1)}px`;
    if (!chart) {
      chart = new window.Chart(canvas, {
        type: "bar",
        data: { labels: [], datasets: [{ data: [], backgroundColor: [] }] },
        options: {
          indexAxis: "y", // horizontal: one bar per checkpoint
          animation: false,
          responsive: true,
          maintainAspectRatio: false,
          plugins: {
            legend: { display: false },
            tooltip: { callbacks: { label: (item) => `${item.parsed.x.toFixed(1)} ${unit}` } },
          },
          scales: { x: { beginAtZero: true, title: { display: true, text: "" } } },
        },
      });
    }
    unit = b.unit;
    chart.data.labels = b.labels;
    chart.data.datasets[0].data = b.values;
    chart.data.datasets[0].backgroundColor = b.colours;
    chart.options.scales.x.title.text = b.axis;
    chart.update();
    canvas.dataset.bars = b.names.join(" ");
  }

  function showDetail(fault) {
    shown = fault;
    for (const t of fault.timeline || []) labels[t.checkpoint] = t.label;
    detail.hidden = false;
    detail.dataset.faultId = fault.id;
    title.textContent = `${fault.type} on ${where(fault)}`;
    summary.replaceChildren(
      status(fault.status),
      ` started ${when(fault.started)}`,
      fault.cleared ? `, cleared ${when(fault.cleared)}` : "",
      `; ${fault.affected.length} server(s) affected`,
      fault.repeats ? `; reported ${fault.repeats} more time(s)` : "",
      fault.flaps ? `; went down again ${fault.flaps} time(s)` : "",
    );
    drawChart(fault.trace);
    const names = new Map(fault.recovery.map((r) => [r.server_id, r.name]));
    owners.body.replaceChildren();
    for (const n of fault.notifications || []) {
      const row = cells(el("tr"), [
        names.get(n.instance_id) || n.instance_id || "", n.alarm_id || "", n.url, status(n.status),
        String(n.attempts), n.delivered ? ms(n.delivered - n.created) : "", n.last_error || "",
      ]);
      row.dataset.status = n.status;
      owners.body.append(row);
    }
    if (!(fault.notifications || []).length) owners.body.append(el("tr", {}, el("td", { colSpan: 7, textContent: "Nobody told (no alarm of an owner's matched)." })));
    const origin = fault.trace.T00 ?? fault.trace.T01 ?? fault.started;
    recovery.body.replaceChildren();
    for (const r of fault.recovery) {
      const row = cells(el("tr"), [
        r.name || r.server_id, r.from_host, r.to_host || "", status(r.result), r.action || r.method || "",
        String(r.attempts), r.serving ? ms(r.serving - origin) : "", r.error || "",
      ]);
      row.dataset.result = r.result;
      recovery.body.append(row);
    }
    if (!fault.recovery.length) recovery.body.append(el("tr", {}, el("td", { colSpan: 8, textContent: "No server to recover." })));
  }

  async function readChosen() {
    const mine = ++reading;
    if (!chosen) return;
    try {
      const fault = await get(`/v1/faults/${encodeURIComponent(chosen)}`);
      if (mine === reading) showDetail(fault);
    } catch (err) {
      if (mine !== reading) return;
      detail.hidden = false;
      title.textContent = err instanceof ApiError && err.status === 404 ? "No such fault (any more)." : `Could not read the fault: ${err.message}`;
    }
  }

  let timer = null;
  function rereadSoon() {
    clearTimeout(timer);
    timer = setTimeout(readChosen, SETTLE_MS);
  }

  showList(first);
  await readChosen();
  const stop = stream(["fault.opened", "fault.changed", "fault.cleared", "gap"], (kind, ev) => {
    if (kind === "gap") {
      get("/v1/faults").then(showList).then(readChosen).catch(() => {});
      return;
    }
    const row = rows.get(ev.id);
    if (kind === "fault.opened" || !row) addRow(ev, true);
    else statusCell(row, ev);
    if (ev.id === chosen) {
      // The event carries the trace as it is now: the chart moves at once; the rest
      // (deliveries, recovery) is read again once the burst is over.
      if (shown && shown.id === ev.id) drawChart(ev.trace);
      rereadSoon();
    }
  }, live);
  return () => {
    stop();
    clearTimeout(timer);
    if (chart) chart.destroy();
  };
}

export async function faultsPage(root, live) {
  const denied = "Faults are the infrastructure's: only admins see them.";
  // With the identity headers, the roles are known here: no request only to be
  // refused. A token's roles are the API's to know.
  const who = identity() || {};
  if (!who.token && !isAdmin()) return deniedPage(root, live, denied);
  let first;
  try {
    first = await get("/v1/faults");
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) return deniedPage(root, live, denied);
    throw err;
  }
  return adminPage(root, live, first);
}
