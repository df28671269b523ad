// Planned maintenance sessions (admin): each with its state, how far it is and its
// hosts; one session's detail: each host's progress (state, times, version before and
// after), the instances it moved (project, action, from -> to), what the owners were
// asked and answered (or let default), and its log. Kept current by the live stream
// (`maintenance.session`).
import { ApiError, get, stream } from "./api.js";
import { chosenInAddress, el, keepInAddress } from "./dom.js";

// Sessions write themselves after every step: one reread per burst of events.
const COALESCE_MS = 150;

// Session, host and instance states -> the dashboard's legend classes (app.css).
const STATE_CLASS = {
  MAINTENANCE_DONE: "ok",
  MAINTENANCE_FAILED: "bad",
  MAINTENANCE_CANCELLED: "bad",
  MAINTENANCE: "warn",
  SCALE_IN: "warn",
  PREPARE_MAINTENANCE: "maint",
  PLANNED_MAINTENANCE: "maint",
  START_MAINTENANCE: "maint",
  MAINTENANCE_COMPLETE: "maint",
  // hosts
  waiting: "none",
  draining: "warn",
  in_maintenance: "maint",
  returned: "ok",
  failed: "bad",
  // instances
  moving: "warn",
  done: "ok",
};
const ENDED = new Set(["MAINTENANCE_DONE", "MAINTENANCE_FAILED", "MAINTENANCE_CANCELLED"]);

// --- small DOM helpers: text only, never HTML ------------------------------------------

function stateBadge(state) {
  return el("span", { className: `state ${STATE_CLASS[state] || "none"}` }, state || "");
}

// A table of `rows` (each a <tr>, or `{cells, props}`: cells text or elements), or a
// line saying there is none.
function table(id, headings, rows, empty) {
  const body = el("tbody");
  const tr = ({ cells, props = {} }) => el("tr", props, ...cells.map((c) => el("td", {}, c ?? "")));
  body.append(...rows.map((r) => (r instanceof Node ? r : tr(r))));
  if (!rows.length) body.append(el("tr", {}, el("td", { colSpan: headings.length }, empty)));
  const head = el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", {}, h))));
  return el("table", { id, className: "grid" }, head, body);
}

function section(title, ...content) {
  return el("section", { className: "block" }, el("h4", {}, title), ...content);
}

function arrow(from, to) {
  return `${from || "?"} → ${to || "…"}`;
}

function progressBar(percent) {
  return el(
    "span",
    { className: "percent" },
    el("progress", { max: 100, value: percent || 0 }),
    ` ${percent || 0} %`
  );
}

// --- the page -----------------------------------------------------------------------------

export async function maintenancePage(root, live) {
  let sessions = [];
  let selected = chosenInAddress("session");
  let flushTimer = null;
  let reloadList = false;
  let reloadSelected = false;
  let stopped = false;
  let readToken = 0; // the latest read of the session shown: an older one answering late is dropped

  const count = el("span", { id: "mt-count" });
  const status = el("span", { id: "mt-status", className: "error" });
  root.append(el("div", { className: "toolbar" }, el("strong", {}, "Maintenance sessions"), count, status));
  const listBox = el("div", { id: "mt-list" });
  const detail = el("div", { id: "mt-session" });
  root.append(listBox, detail);

  function say(err) {
    status.textContent = err ? `Could not read the sessions: ${err.message}` : "";
  }

  // --- the sessions ---------------------------------------------------------------------

  function sessionRow(s) {
    const row = el(
      "tr",
      {
        dataset: { session: s.session_id, state: s.state },
        title: s.session_id,
        tabIndex: 0,
        className: "pick",
      },
      el("td", {}, s.session_id.slice(0, 8)),
      el("td", {}, stateBadge(s.state)),
      el("td", {}, progressBar(s.percent_done)),
      el("td", {}, (s.hosts || []).join(", ") || "every host"),
      el("td", {}, s.maintenance_at || ""),
      el("td", {}, s.updated || "")
    );
    row.classList.toggle("current", s.session_id === selected);
    row.setAttribute("aria-selected", String(s.session_id === selected));
    const choose = () => select(s.session_id);
    row.addEventListener("click", choose);
    row.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") choose();
    });
    return row;
  }

  function renderList() {
    count.textContent = `${sessions.length} sessions`;
    const headings = ["Session", "State", "Done", "Hosts", "From (UTC)", "Updated (UTC)"];
    listBox.replaceChildren(table("mt-sessions", headings, sessions.map(sessionRow), "No session yet."));
  }

  async function loadList() {
    const found = await get("/v1/maintenance");
    if (stopped) return;
    sessions = found.sessions || [];
    renderList();
  }

  // --- one session ----------------------------------------------------------------------

  function select(id) {
    selected = id;
    keepInAddress("session", id);
    renderList();
    loadSelected().catch(say);
  }

  async function loadSelected() {
    if (!selected) return;
    const token = ++readToken;
    const d = await get(`/v1/maintenance/${encodeURIComponent(selected)}/detail`);
    if (stopped || token !== readToken) return;
    renderDetail(d);
  }

  function renderDetail(d) {
    const nameOf = new Map((d.instances || []).map((i) => [i.instance_id, i.name || i.instance_id]));
    const facts = [
      `from ${d.maintenance_at || "?"} UTC`,
      `workflow ${d.workflow}`,
      `host actions: ${(d.actions || []).map((a) => a.plugin).join(", ") || "the default"}`,
    ];
    if (d.current_host) facts.push(`now on ${d.current_host}`);
    if (d.ended) facts.push(`ended ${d.ended} UTC`);
    const head = [
      el("h3", {}, `Session ${d.session_id} `, stateBadge(d.state), " ", progressBar(d.percent_done)),
      el("p", {}, facts.join(" · ")),
    ];
    if (d.paused) head.push(el("p", { className: "warning" }, "Paused by an admin."));
    if (d.waiting) head.push(el("p", { className: "warning" }, `Waiting for ${d.waiting}.`));
    if (d.cancel_requested && !ENDED.has(d.state)) head.push(el("p", { className: "warning" }, "Being cancelled."));
    if (d.error) head.push(el("p", { className: "error" }, d.error));

    const hosts = table(
      "mt-hosts",
      ["Host", "State", "Started (UTC)", "Finished (UTC)", "Version", "Error"],
      (d.host_progress || []).map((h) => ({
        props: { dataset: { host: h.name, state: h.state } },
        cells: [
          h.name,
          stateBadge(h.state),
          h.started,
          h.finished,
          h.version_before || h.version_after ? arrow(h.version_before, h.version_after) : "",
          h.error,
        ],
      })),
      "No host."
    );

    const instances = table(
      "mt-instances",
      ["Instance", "Project", "Action", "State", "From → to", "Started (UTC)", "Finished (UTC)", "Error"],
      (d.instances || []).map((i) => ({
        props: { dataset: { instance: i.instance_id, state: i.state }, title: i.instance_id },
        cells: [
          i.name || i.instance_id,
          i.project_id,
          i.action || "not agreed yet",
          stateBadge(i.state),
          // An instance moved onto a host emptied later in the session moved more than once.
          [...(i.earlier || []), i].map((m) => arrow(m.host, m.to_host)).join(", "),
          i.started,
          i.finished,
          i.error,
        ],
      })),
      "No instance on these hosts."
    );

    const projects = table(
      "mt-projects",
      ["Project", "Asked", "Asked at (UTC)", "Reply", "Replied at (UTC)", "Defaulted", "Instance actions"],
      (d.projects || []).map((p) => ({
        props: { dataset: { project: p.project_id } },
        cells: [
          p.project_id,
          p.asked,
          p.asked_at,
          p.reply || (p.defaulted ? "none: the default applied" : ENDED.has(d.state) ? "none" : "none yet"),
          p.replied_at,
          (p.defaults || []).join(", "),
          Object.entries(p.instance_actions || {})
            .map(([id, action]) => `${nameOf.get(id) || id}: ${action}`)
            .join(", "),
        ],
      })),
      "No owner was asked: nothing runs on these hosts."
    );

    const log = el(
      "ol",
      { id: "mt-log", className: "log" },
      ...(d.log || []).map((entry) => el("li", {}, el("time", {}, entry.at || ""), " ", entry.what))
    );

    detail.replaceChildren(
      ...head,
      section("Hosts", hosts),
      section("Instances", instances),
      section("Owners", projects),
      section("Log", log)
    );
    detail.dataset.session = d.session_id;
    detail.dataset.state = d.state;
  }

  // --- live -------------------------------------------------------------------------------

  function soon({ list = false, one = false }) {
    reloadList ||= list;
    reloadSelected ||= one;
    if (flushTimer === null) flushTimer = setTimeout(flush, COALESCE_MS);
  }

  async function flush() {
    flushTimer = null;
    const [list, one] = [reloadList, reloadSelected];
    reloadList = reloadSelected = false;
    try {
      if (list) await loadList();
      // Nothing chosen yet: the newest is shown, as when the page opens.
      if (!selected && sessions.length) select(sessions[0].session_id);
      else if (one) await loadSelected();
      say(null);
    } catch (err) {
      say(err);
    }
  }

  try {
    await loadList();
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) {
      root.replaceChildren(el("p", {}, "Maintenance sessions are the admins': sign in with the admin role."));
      return () => {};
    }
    throw err;
  }
  if (!selected && sessions.length) selected = sessions[0].session_id;
  if (selected) {
    renderList();
    await loadSelected().catch(say);
  }

  const stop = stream(
    ["maintenance.session", "gap"],
    (kind, ev) => {
      // The list (one read for up to 200 sessions) and, if it changed, the one shown.
      soon({ list: true, one: kind === "gap" || ev.session_id === selected });
    },
    (on) => {
      live(on);
      // Nothing is replayed: what changed before this connection is read again.
      if (on) soon({ list: true, one: true });
    }
  );
  return () => {
    stopped = true;
    stop();
    clearTimeout(flushTimer);
  };
}
