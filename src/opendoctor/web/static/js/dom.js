// Building the pages' DOM: elements from data as text only (never parsed as HTML), and
// times as people read them.

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value);
    else node[key] = value;
  }
  // Strings become text nodes: whatever the API sent is shown, never parsed.
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// A table of the grid style with these headings; rows go into its `body`.
export function table(id, headings) {
  const body = el("tbody");
  const head = el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", { textContent: h }))));
  return { table: el("table", { id, className: "grid" }, head, body), body };
}

// One cell per value: a node as it is, anything else as text.
export function cells(row, values) {
  for (const v of values) row.append(v instanceof Node ? el("td", {}, v) : el("td", { textContent: v ?? "" }));
  return row;
}

// An epoch in seconds, in the reader's locale.
export function when(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleString() : "";
}

// What a page has chosen, kept in the address (`#/faults?id=...`) so that a view can be
// linked. Written with replaceState, which fires no hashchange: the frame does not
// rebuild the page.
export function chosenInAddress(param) {
  return new URLSearchParams(location.hash.split("?")[1] || "").get(param);
}

export function keepInAddress(param, value) {
  const base = location.hash.split("?")[0];
  history.replaceState(null, "", value ? `${base}?${new URLSearchParams({ [param]: value })}` : base);
}
