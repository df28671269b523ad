// The dashboard's frame: sign-in, the pages, the live indicator.
import { ApiError, get, identity, signIn, signOut } from "./api.js";
import { alarmsPage } from "./alarms.js";
import { faultsPage } from "./faults.js";
import { maintenancePage } from "./maintenance.js";
import { templatesPage } from "./templates.js";
import { topologyPage } from "./topology.js";
import { workflowsPage } from "./workflows.js";

const PAGES = {
  topology: topologyPage,
  alarms: alarmsPage,
  faults: faultsPage,
  workflows: workflowsPage,
  maintenance: maintenancePage,
  templates: templatesPage,
};
let leave = null;

async function showLogin(message) {
  const form = document.getElementById("login");
  const config = await fetch("/ui/config.json").then((r) => r.json());
  for (const label of form.querySelectorAll("label[data-mode]")) {
    label.hidden = !label.dataset.mode.split(" ").includes(config.auth_mode);
  }
  document.getElementById("login-help").textContent =
    config.auth_mode === "trusted-headers"
      ? "This service takes the identity its proxy gives; without one, say who you act as."
      : "A token of this service's (or Keystone's) identifies you.";
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("page").replaceChildren();
  form.hidden = false;
  form.onsubmit = (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    signIn(
      config.auth_mode === "trusted-headers"
        ? { project: data.get("project"), roles: data.get("roles") }
        : { token: data.get("token") }
    );
    form.hidden = true;
    route();
  };
}

async function route() {
  if (leave) leave();
  leave = null;
  const who = identity();
  const logout = document.getElementById("logout");
  if (!who) {
    logout.hidden = true;
    document.getElementById("who").textContent = "";
    return showLogin();
  }
  logout.hidden = false;
  document.getElementById("who").textContent = who.project ? `project ${who.project}` : "token";
  const name = (location.hash.replace(/^#\//, "") || "topology").split("?")[0];
  const page = PAGES[name] || topologyPage;
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("current", link.dataset.page === name);
  }
  const root = document.getElementById("page");
  root.replaceChildren();
  // Dark until the new page's stream (if it has one) is up.
  document.getElementById("live").classList.remove("on");
  document.getElementById("live").textContent = "○ live";
  try {
    leave = await page(root, (on) => {
      document.getElementById("live").classList.toggle("on", on);
      document.getElementById("live").textContent = on ? "● live" : "○ live";
    });
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      signOut();
      return showLogin("That identity was refused.");
    }
    root.textContent = `Could not load the page: ${err.message}`;
  }
}

document.getElementById("logout").onclick = () => {
  signOut();
  route();
};
window.addEventListener("hashchange", route);
route();
