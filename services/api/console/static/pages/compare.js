// Compare 2 to 10 runs (GET /v1/runs/compare): overlaid curves, final and best metrics, and
// what differs in their specs and generated configs. The runs table's checkboxes lead here.
// Live while a compared run has not ended: each such run's events (GET /v1/runs/{id}/events, at most
// MAX_TABLE_STREAMS streams) read the comparison again; runs beyond that cap are read every 10 s.
import { debounced, followRun, isEnded, MAX_TABLE_STREAMS } from "../live.js";
import { alertBox, api, chart, el, number, redraw, runLink, short, statusCell, table } from "./common.js";

const UNFOLLOWED_REFRESH_MS = 10_000;

const MIN_RUNS = 2;
const MAX_RUNS = 10;
const selected = new Set();
const CURVES = [["loss", "Loss per epoch"], ["bbox_mAP", "mAP per epoch"], ["bbox_mAP_50", "mAP50 per epoch"],
                ["precision_50", "Precision (IoU 0.5) per epoch"], ["recall_50", "Recall (IoU 0.5) per epoch"]];
const METRICS = ["bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "precision_50", "recall_50", "loss"];

function updateButton() {
  const button = document.getElementById("compare-selected");
  if (!button) return;
  const count = selected.size;
  button.disabled = count < MIN_RUNS || count > MAX_RUNS;
  button.textContent = `Compare selected (${count})`;
  document.getElementById("compare-hint").textContent =
    count > MAX_RUNS ? `Select at most ${MAX_RUNS} runs.` : count < MIN_RUNS ? `Select ${MIN_RUNS} to ${MAX_RUNS} runs.` : "";
}

// The runs table gets a first column of checkboxes and a button under its filters.
export function installSelection(section) {
  const head = section.querySelector("thead tr");
  head.prepend(el("th", { scope: "col", role: "columnheader" }, el("span", { className: "visually-hidden" }, "Select")));
  const button = el("button", { id: "compare-selected", type: "button", disabled: true }, "");
  button.addEventListener("click", () => {
    window.location.assign(`/console/compare?ids=${[...selected].join(",")}`);
  });
  section.querySelector("#filters").after(
    el("p", {}, button, " ", el("span", { id: "compare-hint", "aria-live": "polite" })));
  updateButton();
}

export function selectionCell(run) {
  const box = el("input", { type: "checkbox", checked: selected.has(run.id),
                            "aria-label": `Select run ${run.name} for comparison` });
  box.addEventListener("change", () => {
    if (box.checked) selected.add(run.id); else selected.delete(run.id);
    updateButton();
  });
  return el("td", {}, box);
}

async function curves(root, comparison) {
  const section = el("section", { "aria-label": "Curves" }, el("h3", {}, "Curves"));
  root.append(section);
  const missing = [];
  for (const [metric, title] of CURVES) {
    const series = comparison.runs
      .filter((run) => run.series.series[metric])
      .map((run) => ({ name: run.name, type: "line", showSymbol: true, symbolSize: 8, connectNulls: true,
                       data: run.series.epochs.map((epoch, i) => [epoch, run.series.series[metric][i]]) }));
    if (!series.length) { missing.push(title); continue; }
    const option = { title: { text: title, textStyle: { fontSize: 14 } }, tooltip: { trigger: "axis" },
                     legend: { top: 24, type: "scroll" }, grid: { top: 64, left: 56, right: 16 },
                     xAxis: { type: "value", name: "epoch", minInterval: 1 }, yAxis: { type: "value", scale: true },
                     series, aria: { enabled: true } };
    const instance = await chart(section, option, `${title}, one line per run`);
    if (instance) instance.getDom().dataset.metric = metric;
  }
  if (missing.length === CURVES.length) section.append(el("p", {}, "No epoch has been logged yet: nothing to draw."));
  else if (missing.length) section.append(el("p", {}, `Not logged by any of these runs: ${missing.join(", ")}.`));
}

function metricsTable(comparison) {
  const headers = ["Run", "Status", "Architecture", "Epochs",
                   ...METRICS.flatMap((m) => [`${m} final`, `${m} best (epoch)`])];
  return table("Final and best metrics", headers, comparison.runs, (run) => [
    el("td", {}, runLink(run.id, run.name)), statusCell(run.status), run.architecture, String(run.epochs_done),
    ...METRICS.flatMap((m) => [number(run.final_metrics[m]),
      run.best_metrics[m] ? `${number(run.best_metrics[m].value)} (${run.best_metrics[m].epoch})` : "–"]),
  ], (run) => ({ dataset: { runId: run.id } }));
}

// 0.0010000000000000002 reads as 0.001; the exact value stays in the cell's title.
function specValue(value) {
  if (value === undefined || value === null) return "unset";
  const text = typeof value === "number" && !Number.isInteger(value) ? String(Number(value.toPrecision(6)))
    : JSON.stringify(value);
  return el("td", { title: JSON.stringify(value) }, text);
}

function specTable(comparison) {
  if (!comparison.spec_differences.length) return el("p", {}, "Their specs are the same (apart from the name).");
  const headers = ["Spec field", ...comparison.runs.map((run) => run.name)];
  return table("Spec fields that differ", headers, comparison.spec_differences,
               (diff) => [el("td", {}, el("code", {}, diff.field)),
                          ...diff.values.map(specValue)],
               (diff) => ({ dataset: { field: diff.field } }));
}

function configDiffs(comparison) {
  const names = Object.fromEntries(comparison.runs.map((run) => [run.id, run.name]));
  const first = comparison.runs[0];
  return el("section", { "aria-label": "Generated config differences" },
    el("h3", {}, "Generated configs"),
    ...comparison.config_differences.map((d) => el("details", { open: true },
      el("summary", {}, `${names[d.run_id]} against ${first.name}`),
      d.diff ? el("pre", { className: "diff", tabIndex: 0 }, d.diff)
             : el("p", {}, "No difference (or a config is not generated yet)."))));
}

export async function render(root, { query }) {
  const ids = (query.get("ids") || "").split(",").filter(Boolean);
  root.append(el("h2", {}, "Compare runs"), alertBox("compare-error"));
  if (ids.length < MIN_RUNS || ids.length > MAX_RUNS) {
    root.querySelector("#compare-error").textContent =
      `Select ${MIN_RUNS} to ${MAX_RUNS} runs in the runs table, then choose “Compare selected”.`;
    root.append(el("p", {}, el("a", { href: "/console/runs" }, "Back to the runs")));
    return;
  }
  const holder = el("div");
  root.append(holder);
  const path = `/v1/runs/compare?ids=${encodeURIComponent(ids.join(","))}`;
  let comparison;
  try { comparison = await api("GET", path); } catch (error) {
    root.querySelector("#compare-error").textContent = error.message;
    return;
  }
  await draw(holder, comparison);
  follow(holder, path, comparison);
}

function draw(holder, comparison) {
  const charts = el("div");
  redraw(holder, el("p", {}, `${comparison.runs.length} runs: `,
                    ...comparison.runs.flatMap((run, i) => [i ? ", " : "",
                                                            runLink(run.id, `${run.name} (${short(run.id)})`)])),
         charts,
         el("section", { "aria-label": "Metrics" }, el("h3", {}, "Metrics"), metricsTable(comparison)),
         el("section", { "aria-label": "Spec differences" }, el("h3", {}, "Spec differences"), specTable(comparison)),
         configDiffs(comparison));
  return curves(charts, comparison);
}

// The runs not ended yet are followed; every event (debounced) reads the comparison again and redraws.
function follow(holder, path, comparison) {
  const closers = new Map();
  let timer = null;
  const refresh = debounced(async () => {
    let fresh;
    try { fresh = await api("GET", path); } catch { return; }
    await draw(holder, fresh);
    watch(fresh);
  });
  const watch = (current) => {
    const open = current.runs.filter((run) => !isEnded(run.status));
    for (const [id, close] of closers) {
      if (!open.some((run) => run.id === id)) { close(); closers.delete(id); }
    }
    for (const run of open) {
      if (closers.size >= MAX_TABLE_STREAMS || closers.has(run.id)) continue;
      closers.set(run.id, followRun(run.id, (kind) => {
        if (kind === "end" || kind === "revoked") closers.delete(run.id);
        refresh();
      }));
    }
    const unfollowed = open.some((run) => !closers.has(run.id));
    if (unfollowed && !timer) timer = setInterval(refresh, UNFOLLOWED_REFRESH_MS);
    if (!unfollowed && timer) { clearInterval(timer); timer = null; }
    holder.dataset.followed = [...closers.keys()].join(" ");
  };
  watch(comparison);
}
