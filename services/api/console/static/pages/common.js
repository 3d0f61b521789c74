import { loadECharts } from "../charts.js";

// What every page module shares: the API call with the session cookie and CSRF header, the
// signed-in key's scopes, and small DOM helpers. Pages call the public API only.

export function csrf() {
  const pair = document.cookie.split("; ").find((c) => c.startsWith("trainyard_csrf="));
  return pair ? decodeURIComponent(pair.split("=")[1]) : "";
}

// A failed call throws an Error carrying the status and the problem details (RFC 9457).
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                     credentials: "same-origin" });
  if (answer.status === 204) return null;
  const data = await answer.json();
  if (!answer.ok) throw Object.assign(new Error(data.detail || answer.statusText), { status: answer.status, data });
  return data;
}

// `me` is GET /v1/keys/me: what the signed-in key may do decides which actions are offered.
export function mayDo(me, scope) {
  if (!me) return false;
  const write = { "runs:read": "runs:write", "datasets:read": "datasets:write", "models:read": "models:publish" };
  return me.scopes.includes(scope) || me.scopes.includes("admin") || me.scopes.includes(write[scope]);
}

// el("td", {className: "x"}, "text", child): an element with properties and children.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("aria-") || name === "for" || name === "role" || name === "scope") {
      node.setAttribute(name, value);
    } else node[name] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export const short = (id) => (id ? id.slice(0, 8) : "–");
export const number = (value, digits = 3) => (value == null ? "–" : Number(value).toFixed(digits));
export const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

export function duration(seconds) {
  if (seconds == null) return "–";
  const s = Math.round(seconds);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

// A status is always its word; the class only adds colour (never the only signal).
export function statusCell(status) {
  return el("td", { className: `status status-${status}` }, status);
}

export const runLink = (id, text) => el("a", { href: `/console/runs/${id}` }, text || short(id));

// A table with column headers and one row per item (`cells(item)` returns the <td>s or texts). At
// phone width it reads as one card per row, each cell under its column's name (console.css,
// table.cards); the explicit roles keep it a table for screen readers, which some browsers stop
// treating as one once its display changes.
let tables = 0;

// A row of such a table: its cells' roles and the column names its cards show.
export function cardRow(tr, labels) {
  tr.setAttribute("role", "row");
  [...tr.children].forEach((td, i) => { td.setAttribute("role", "cell"); td.dataset.label = labels[i] ?? ""; });
  return tr;
}

export function table(caption, headers, items, cells, rowProps = () => ({})) {
  const captionId = `table-caption-${++tables}`;
  const head = el("tr", { role: "row" }, ...headers.map((h) => el("th", { scope: "col", role: "columnheader" }, h)));
  const rows = items.map((item) => cardRow(el("tr", rowProps(item), ...cells(item).map(
    (c) => (c instanceof HTMLElement && c.tagName === "TD" ? c : el("td", {}, c ?? "–")))), headers));
  const box = el("div", { className: "scroll" },
                 el("table", { className: "cards", role: "table", "aria-labelledby": captionId },
                    el("caption", { id: captionId }, caption), el("thead", { role: "rowgroup" }, head),
                    el("tbody", { role: "rowgroup" }, ...rows)));
  scrollable.observe(box);
  return box;
}

// A table wider than its box scrolls inside it; then the box is a Tab stop (a named region), so the
// keyboard can scroll it too, not only reach its links. Boxes that fit are left out of the Tab order.
const scrollable = new ResizeObserver((entries) => {
  for (const { target } of entries) {
    const wide = target.scrollWidth > target.clientWidth + 1;
    if (wide && !target.hasAttribute("tabindex")) {
      const caption = target.querySelector("caption")?.textContent || "Table";
      Object.assign(target, { tabIndex: 0 });
      target.setAttribute("role", "region");
      target.setAttribute("aria-label", `${caption} (scrolls sideways)`);
    } else if (!wide && target.hasAttribute("tabindex")) {
      for (const name of ["tabindex", "role", "aria-label"]) target.removeAttribute(name);
    }
  }
});

export function alertBox(id) {
  return el("p", { id, role: "alert", className: "error" });
}

// Charts come from ECharts, served by the API (charts.js loads it, never from a CDN); a page
// without it still shows every number in its tables.
export async function chart(container, option, label) {
  const box = el("div", { className: "chart", role: "img", "aria-label": label });
  container.append(box);
  let echarts;
  try { echarts = await loadECharts(); } catch (error) {
    box.append(el("p", {}, `${error.message} (scripts/setup.sh installs it); the tables show the same values.`));
    box.classList.add("chart-missing");
    return null;
  }
  const instance = echarts.init(box, null, { renderer: "svg" });
  // No animation: a reader (and a screenshot) sees the final chart at once; kinder to reduced motion.
  instance.setOption({ animation: false, ...option });
  // A live page redraws its charts: one whose box has left the page is disposed of at the next resize.
  const resize = () => {
    if (box.isConnected) { instance.resize(); return; }
    instance.dispose();
    window.removeEventListener("resize", resize);
  };
  window.addEventListener("resize", resize);
  return instance;
}

// Redraw `holder` with `nodes`, keeping the keyboard where it was: the control with the same
// `data-focus-key` (one whose label changes, Publish becoming Unpublish), label, id or link text in
// the new content gets the focus back (a live page redraws while someone tabs through it).
export function redraw(holder, ...nodes) {
  const focused = holder.contains(document.activeElement) ? document.activeElement : null;
  const attribute = (name) => focused.getAttribute(name) && `[${name}='${CSS.escape(focused.getAttribute(name))}']`;
  const same = focused && (attribute("data-focus-key") || attribute("aria-label") || attribute("id"));
  const text = focused && focused.textContent;
  holder.replaceChildren(...nodes);
  if (!focused) return;
  const again = same ? holder.querySelector(same)
    : [...holder.querySelectorAll(focused.tagName)].find((node) => node.textContent === text
                                                          && node.getAttribute("href") === focused.getAttribute("href"));
  again?.focus();
}

// What a live page says in `box` when its stream stops for good (live.js followList's onClosed):
// `gone` for a removed thing, and that the page is no longer live once the session or key is not valid.
export function whenStopped(box, gone = "") {
  return (why) => {
    if (why === "gone") box.textContent = gone;
    else if (why === "revoked" || why === "failed") {
      box.textContent = "Live updates stopped (the session ended or its key was revoked): reload the page.";
    }
  };
}
