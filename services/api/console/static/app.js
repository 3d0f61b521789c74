// The console's first page: sign-in and the runs table. It calls the public API only, with the
// session cookie; writes echo the CSRF cookie in X-CSRF-Token.
import { LiveTable } from "./live.js";
import { hideRun, showRun } from "./run.js";
import { route as routePage } from "./pages/router.js";
import { installSelection, selectionCell } from "./pages/compare.js";
import { api, cardRow } from "./pages/common.js";

const $ = (id) => document.getElementById(id);
let me = null;
let cursor = null;

const may = (scope) => me && (me.scopes.includes(scope) || me.scopes.includes("admin"));

function duration(seconds) {
  if (seconds == null) return "–";
  const s = Math.round(seconds);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

const COLUMNS = ["Compare", "Name", "Created", "Status", "Progress", "Duration", "Trainer", "Architecture", "Dataset",
                 "Best mAP", ""];

function row(run) {
  const tr = document.createElement("tr");
  tr.dataset.runId = run.id;
  tr.dataset.status = run.status;
  const cells = [null, new Date(run.created_at).toLocaleString(), null, null, duration(run.duration_s),
                 run.trainer_id || "–", run.spec.architecture, run.spec.dataset_id.slice(0, 8),
                 run.best ? `${run.best.value.toFixed(3)} (epoch ${run.best.epoch})` : "–"];
  for (const text of cells) {
    const td = document.createElement("td");
    if (text !== null) td.textContent = text;
    tr.append(td);
  }
  const link = Object.assign(document.createElement("a"), { href: `#/runs/${run.id}`, textContent: run.name });
  tr.children[0].append(link);
  Object.assign(tr.children[4], { className: "duration" });
  Object.assign(tr.children[4].dataset, { seconds: String(run.duration_s ?? 0), fetchedAt: String(Date.now()) });
  const status = tr.children[2];
  status.textContent = run.status;  // the word itself, never the colour alone
  status.className = `status status-${run.status}`;
  const bar = document.createElement("progress");
  bar.max = 100; bar.value = run.progress.percent;
  bar.setAttribute("aria-label", `${run.name}: epoch ${run.progress.epoch} of ${run.progress.total_epochs}`);
  tr.children[3].append(bar, ` ${run.progress.epoch}/${run.progress.total_epochs}`);
  tr.children[8].className = "best";
  const actions = document.createElement("td");
  const ended = ["success", "failed", "aborted", "terminated"].includes(run.status);
  if (may("runs:write")) {
    // What the API accepts in each status (routes/runs.py): kill until it ends, rerun what did not
    // succeed, remove what has ended; each asks first.
    if (!ended) actions.append(action("Kill", run, "POST", `/v1/runs/${run.id}/kill`));
    if (["failed", "aborted", "terminated"].includes(run.status)) {
      actions.append(action("Rerun", run, "POST", `/v1/runs/${run.id}/rerun`));
    }
    if (ended) {
      actions.append(action("Remove", run, "DELETE", `/v1/runs/${run.id}`,
                            " Its epochs, checkpoints and previews are deleted; a model it produced stays."));
    }
  }
  tr.append(actions);
  tr.prepend(selectionCell(run));
  // At phone width each row is a card with every cell under its column's name (table.cards).
  return cardRow(tr, COLUMNS);
}

function action(verb, run, method, path, warning = "") {
  const button = document.createElement("button");
  button.textContent = verb;
  button.setAttribute("aria-label", `${verb} run ${run.name}`);
  button.addEventListener("click", async () => {
    if (!confirm(`${verb} run ${run.name}?${warning}`)) return;
    try {
      await api(method, path);
      await loadRuns(true);
      if (verb === "Rerun") liveTable.awaitRerun(run.id);
    }
    catch (error) { $("runs-error").textContent = error.message; }
  });
  return button;
}

async function loadRuns(fresh) {
  if (fresh) { cursor = null; liveTable.stop(); $("run-rows").replaceChildren(); }
  const params = new URLSearchParams({ limit: "50" });
  if ($("search").value) params.set("search", $("search").value);
  if ($("status").value) params.set("status", $("status").value);
  params.set("sort", $("sort").value);
  if (cursor) params.set("cursor", cursor);
  try {
    const page = await api("GET", `/v1/runs?${params}`);
    $("runs-error").textContent = "";
    $("run-rows").append(...page.items.map(row));
    cursor = page.next_cursor;
    $("more").hidden = !cursor;
    liveTable.watch();
  } catch (error) { $("runs-error").textContent = error.message; }
}

async function start() {
  try { me = await api("GET", "/v1/keys/me"); } catch { me = null; }
  $("sign-in").hidden = !!me;
  $("sign-out").hidden = !me;
  $("pages").hidden = !me;
  $("who").textContent = me ? `project ${me.project} · ${me.scopes.join(", ")}` : "";
  await route();
}

// #/runs/<id> is a run's page (run.js); anything else the runs table, live while it is shown.
const liveTable = new LiveTable($("run-rows"), { api, renderRow: row, duration });
async function route() {
  const match = location.hash.match(/^#\/runs\/([0-9a-f]{32})$/);
  // Another page by its path (/console/new, /console/compare, ...: pages/router.js).
  const elsewhere = !match && await routePage(me, $("page"));
  $("runs").hidden = !me || !!match || elsewhere;
  if (me && match) { liveTable.stop(); await showRun(match[1], { api, may, duration }); return; }
  hideRun();
  if (me && !elsewhere) {
    document.querySelector("nav a[href='/console/runs']").setAttribute("aria-current", "page");
    await loadRuns(true);
  } else liveTable.stop();
}
window.addEventListener("hashchange", route);

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await api("POST", "/console/session", { key: $("key").value });
    $("key").value = "";
    await start();
    $("main").focus();  // the form the keyboard was in is gone: continue at the page it opened
  }
  catch (error) { $("sign-in-error").textContent = error.message; }
});
$("sign-out").addEventListener("click", async () => { await api("DELETE", "/console/session"); await start(); });
$("filters").addEventListener("submit", (event) => { event.preventDefault(); loadRuns(true); });
$("more").addEventListener("click", () => loadRuns(false));
$("sort").addEventListener("change", () => loadRuns(true));
// The skip link moves the focus itself: following its #main would change the hash, which is the run
// page's address (route() would leave the run page).
document.querySelector("a.skip").addEventListener("click", (event) => { event.preventDefault(); $("main").focus(); });
installSelection($("runs"));
start();
