// The run page (/console/#/runs/<id>; /console/runs/<id> leads there): status, attempts, time, curves, confusion matrix,
// previews, checkpoints, config, failure and weights, from the public API with the session cookie;
// live through the run's event stream. Writes (kill, rerun) are offered only to keys whose scopes allow them.
import { disposeCharts, heatMap, lineChart } from "./charts.js";
import { debounced, followRun, isEnded } from "./live.js";
import { cardRow } from "./pages/common.js";

const METRICS = [["bbox_mAP", "mAP"], ["bbox_mAP_50", "mAP50"], ["precision_50", "precision"],
                 ["recall_50", "recall"]];
const RERUNNABLE = ["failed", "aborted", "terminated"];
const LOG_TAIL = 15;
const RERUN_WAIT_MS = 60_000;
// The run's stream speaks at each epoch; an iteration curve that waited for it would stand still for a
// whole epoch, so while the run trains the page asks for the iteration logs after its newest step.
const ITERATION_POLL_MS = 2000;

const CHECKPOINT_COLUMNS = ["Attempt", "Epoch", "Size", "Stored", "Best"];
const HISTORY_COLUMNS = ["At", "Attempt", "Status", "Message"];
const heads = (names) => names.map((name) => `<th scope="col" role="columnheader">${name}</th>`).join("");

const TEMPLATE = `
<p><a href="/console/#/runs">All runs</a></p>
<h2 id="run-title">Run</h2>
<p id="run-error" role="alert"></p>
<div class="run-summary">
  <dl>
    <dt>Status</dt><dd><span id="run-status" class="status" aria-live="polite"></span> <span id="run-overview"></span></dd>
    <dt>Progress</dt><dd><progress id="run-progress" max="100" value="0"></progress> <span id="run-progress-text"></span></dd>
    <dt>Duration</dt><dd id="run-duration"></dd>
    <dt>Time left</dt><dd id="run-eta"></dd>
    <dt id="run-where-label">Trainer</dt><dd id="run-where"></dd>
    <dt>Attempt</dt><dd id="run-attempt"></dd>
    <dt>Best epoch</dt><dd id="run-best">–</dd>
  </dl>
  <div id="run-actions" class="actions"></div>
</div>
<section id="run-failure" hidden aria-labelledby="run-failure-title">
  <h3 id="run-failure-title">Why it ended</h3><pre id="run-message"></pre>
  <h4>End of its training log</h4><pre id="run-log-tail"></pre>
</section>
<section aria-labelledby="run-curves-title"><h3 id="run-curves-title">Curves</h3>
  <div class="charts">
    <div id="chart-loss-iteration" class="chart" role="img" aria-label="Loss per logged iteration"></div>
    <div id="chart-loss-epoch" class="chart" role="img" aria-label="Loss per epoch"></div>
    <div id="chart-metrics" class="chart" role="img" aria-label="mAP, mAP50, precision and recall per epoch"></div>
  </div>
</section>
<section aria-labelledby="run-matrix-title"><h3 id="run-matrix-title">Confusion matrix</h3>
  <p><label for="matrix-epoch">Evaluation</label>
    <input id="matrix-epoch" type="range" min="0" max="0" step="1" value="0" disabled>
    <output id="matrix-epoch-label" for="matrix-epoch">none yet</output></p>
  <div id="chart-matrix" class="chart chart-square" role="img" aria-label="Confusion matrix heat map"></div>
  <p id="matrix-note"></p>
  <details><summary>The counts as a table</summary><div class="scroll"><table id="matrix-table"></table></div></details>
</section>
<section aria-labelledby="run-previews-title"><h3 id="run-previews-title">Previews</h3>
  <p><label for="preview-epoch">Epoch</label> <select id="preview-epoch" disabled></select></p>
  <p id="preview-note"></p><div id="preview-images" class="previews"></div>
</section>
<section aria-labelledby="run-checkpoints-title"><h3 id="run-checkpoints-title">Checkpoints</h3>
  <p id="checkpoint-note"></p>
  <div class="scroll"><table class="cards" role="table" aria-labelledby="run-checkpoints-title">
    <thead role="rowgroup"><tr role="row">${heads(CHECKPOINT_COLUMNS)}</tr></thead>
    <tbody id="checkpoint-rows" role="rowgroup"></tbody></table></div>
</section>
<section aria-labelledby="run-history-title"><h3 id="run-history-title">Attempts and status history</h3>
  <div class="scroll"><table class="cards" role="table" aria-labelledby="run-history-title">
    <thead role="rowgroup"><tr role="row">${heads(HISTORY_COLUMNS)}</tr></thead>
    <tbody id="history-rows" role="rowgroup"></tbody></table></div>
</section>
<details id="run-config-box"><summary>Generated config</summary><pre id="run-config">not generated yet</pre></details>`;

let page = null;  // the page being shown: {runId, ctx, close, ticker, ...}

const $ = (id) => document.getElementById(id);
const text = (id, value) => { $(id).textContent = value; };
const cell = (value) => Object.assign(document.createElement("td"), { textContent: value });
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
const number = (value, digits = 3) => (value == null ? "–" : Number(value).toFixed(digits));

function section() {
  let element = $("run-page");
  if (!element) {
    // Its own style sheet, so the page's rules stay beside it.
    document.head.append(Object.assign(document.createElement("link"), { rel: "stylesheet", href: "/console/run.css" }));
    element = Object.assign(document.createElement("section"), { id: "run-page" });
    element.setAttribute("aria-labelledby", "run-title");
    document.querySelector("main").append(element);
  }
  return element;
}

/** Leave the run page: close its stream and timers, drop its charts. */
export function hideRun() {
  if (!page) return;
  page.close?.();
  clearInterval(page.ticker);
  clearInterval(page.iterationPoller);
  const element = $("run-page");
  disposeCharts(element);
  element.hidden = true;
  page = null;
}

/** Show run `runId`; `ctx` is the console's {api, may, duration}. */
export async function showRun(runId, ctx) {
  hideRun();
  const element = section();
  element.innerHTML = TEMPLATE;
  element.hidden = false;
  page = { runId, ctx, epochs: -1, attempt: -1, matrixEpochs: [], iterations: [], run: null };
  const current = page;
  $("matrix-epoch").addEventListener("input", debounced(() => showMatrix(current), 150));
  $("preview-epoch").addEventListener("change", () => showPreviews(current));
  page.ticker = setInterval(() => tickDuration(current), 1000);
  try { await refresh(current); } catch (error) { text("run-error", error.message); }
}

/** Follow the run's events from what was just read on (no replay of the history); each refreshes the page. */
function follow(current) {
  const later = debounced(() => refresh(current).catch((error) => text("run-error", error.message)));
  current.streaming = true;
  clearInterval(current.iterationPoller);
  current.iterationPoller = setInterval(() => followIterations(current), ITERATION_POLL_MS);
  current.close = followRun(current.runId, (kind) => {
    if (kind === "end" || kind === "revoked") current.streaming = false;
    later();
  }, current.position);
}

async function refresh(current) {
  const { api } = current.ctx;
  const [run, logs] = await Promise.all([api("GET", `/v1/runs/${current.runId}`),
                                         api("GET", `/v1/runs/${current.runId}/logs`)]);
  if (page !== current) return;
  const epochs = logs.items.filter((entry) => entry.kind === "epoch");
  const later = (a, b) => b.attempt > a.attempt || (b.attempt === a.attempt && b.epoch > a.epoch);
  const last = epochs.reduce((a, b) => (!a || later(a, b) ? b : a), null);
  current.position = `${run.history.length}-${last ? last.attempt : 0}-${last ? last.epoch : 0}`;
  current.run = run;
  current.fetchedAt = Date.now();
  text("run-error", "");
  showSummary(current, run, epochs);
  showActions(current, run);
  showHistory(run);
  showFailure(run, logs.items);
  current.iterations = logs.items.filter((entry) => entry.kind === "iteration");
  if (isEnded(run.status)) clearInterval(current.iterationPoller);
  await showCurves(current, epochs);
  if (!isEnded(run.status) && !current.streaming) { current.rerunAsked = null; follow(current); }
  if (isEnded(run.status) && current.rerunAsked && Date.now() - current.rerunAsked < RERUN_WAIT_MS) {
    // The scheduler applies a rerun a moment after the API accepts it; until then the run still reads ended.
    setTimeout(() => refresh(current).catch((error) => text("run-error", error.message)), 1000);
  }
  // An ended run's last word (its model, final checkpoints) once per ending, not on every read.
  const newEnding = isEnded(run.status) && current.endingShown !== run.history.length;
  const changed = epochs.length !== current.epochs || run.attempt !== current.attempt || newEnding;
  if (changed) {
    if (newEnding) current.endingShown = run.history.length;
    const attemptChanged = run.attempt !== current.attempt;
    current.epochs = epochs.length;
    current.attempt = run.attempt;
    await Promise.all([showCheckpoints(current), showBest(current), updateMatrixEpochs(current, run, epochs),
                       loadPreviews(current), attemptChanged || isEnded(run.status) ? showConfig(current) : null,
                       isEnded(run.status) ? showWeights(current, run) : null]);
  }
}

function showSummary(current, run, epochs) {
  document.title = `${run.name} · trainyard`;
  text("run-title", `Run ${run.name}`);
  const status = $("run-status");
  status.textContent = run.status;  // the word itself, never the colour alone
  status.className = `status status-${run.status}`;
  text("run-overview", run.overview);
  const bar = $("run-progress");
  bar.value = run.progress.percent;
  bar.setAttribute("aria-label", `epoch ${run.progress.epoch} of ${run.progress.total_epochs}`);
  text("run-progress-text", `epoch ${run.progress.epoch} of ${run.progress.total_epochs} (${Math.round(run.progress.percent)} %)`);
  tickDuration(current);
  const waiting = run.status === "pending" || run.status === "created";
  text("run-where-label", waiting ? "Waiting because" : "Trainer");
  text("run-where", waiting
    ? `${run.pending_reason || run.message || "queued"}${run.queue_position != null ? ` (place ${run.queue_position} in the queue)` : ""}`
    : [run.trainer_id || "–", run.device].filter(Boolean).join(" · "));
  text("run-attempt", `${run.attempt} of at most ${run.spec.max_attempts}`);
  text("run-eta", timeLeft(run, epochs, current.ctx.duration));
}

function tickDuration(current) {
  const run = current.run;
  if (!run || page !== current) return;
  const running = run.status === "in_progress" && run.duration_s != null;
  const seconds = running ? run.duration_s + (Date.now() - current.fetchedAt) / 1000 : run.duration_s;
  text("run-duration", current.ctx.duration(seconds));
}

/** The mean epoch time of the current attempt times the epochs still to go. */
function timeLeft(run, epochs, duration) {
  if (isEnded(run.status)) return "none: the run has ended";
  const mine = epochs.filter((entry) => entry.attempt === run.attempt);
  if (run.status !== "in_progress" || mine.length === 0) return "not known until an epoch has finished";
  const mean = mine.reduce((sum, entry) => sum + entry.epoch_time_s, 0) / mine.length;
  const left = Math.max(run.progress.total_epochs - run.progress.epoch, 0);
  return `about ${duration(mean * left)} (${left} epochs at ${duration(mean)} each)`;
}

function button(label, describe, action) {
  const element = Object.assign(document.createElement("button"), { type: "button", textContent: label });
  element.setAttribute("aria-label", describe);
  element.addEventListener("click", action);
  return element;
}

function showActions(current, run) {
  const { api, may } = current.ctx;
  const actions = [];
  const act = (verb) => async () => {
    if (!confirm(`${verb} run ${run.name}?`)) return;
    try {
      await api("POST", `/v1/runs/${run.id}/${verb.toLowerCase()}`);
      if (verb === "Rerun") current.rerunAsked = Date.now();
      await refresh(current);
    }
    catch (error) { text("run-error", error.message); }
  };
  if (may("runs:write") && !isEnded(run.status)) actions.push(button("Kill", `Kill run ${run.name}`, act("Kill")));
  if (may("runs:write") && RERUNNABLE.includes(run.status)) {
    actions.push(button("Rerun", `Rerun run ${run.name}`, act("Rerun")));
  }
  const weights = $("run-weights");
  $("run-actions").replaceChildren(...actions, ...(weights ? [weights] : []));
}

function showHistory(run) {
  $("history-rows").replaceChildren(...run.history.map((change) => {
    const tr = document.createElement("tr");
    tr.append(cell(when(change.at)), cell(change.attempt ?? "–"), cell(change.status), cell(change.message || ""));
    return cardRow(tr, HISTORY_COLUMNS);
  }));
}

function showFailure(run, items) {
  const failed = run.status === "failed" || run.status === "aborted";
  $("run-failure").hidden = !failed;
  if (!failed) return;
  text("run-message", run.message || "no message");
  const lines = items.slice(-LOG_TAIL).map((entry) => {
    const where = entry.kind === "epoch" ? `epoch ${entry.epoch}` : `epoch ${entry.epoch} step ${entry.step}`;
    return `${entry.logged_at}  attempt ${entry.attempt ?? "–"}  ${where}  loss ${number(entry.loss, 4)}`;
  });
  text("run-log-tail", lines.join("\n") || "nothing was logged");
}

/** The iteration logs stored after the newest one shown, added to the curve (the stream says nothing of them). */
async function followIterations(current) {
  if (current.iterationsAsked) return;  // one question at a time: a slow answer is not asked again over it
  current.iterationsAsked = true;
  try {
    const newest = current.iterations.length ? current.iterations[current.iterations.length - 1].step : 0;
    const answer = await current.ctx.api("GET",
      `/v1/runs/${current.runId}/logs?kind=iteration&after_step=${newest}`);
    // A refresh may have read them meanwhile: only steps after the newest now shown are new.
    const shown = current.iterations.length ? current.iterations[current.iterations.length - 1].step : 0;
    const fresh = answer.items.filter((entry) => entry.step > shown);
    if (page !== current || fresh.length === 0) return;
    current.iterations = [...current.iterations, ...fresh];
    await showIterations(current);
  }
  catch (error) { text("run-error", error.message); }
  finally { current.iterationsAsked = false; }
}

function showIterations(current) {
  const points = current.iterations.filter((entry) => entry.loss != null).map((entry) => [entry.step, entry.loss]);
  return lineChart($("chart-loss-iteration"), { title: "Loss per logged iteration", xName: "iteration",
                                               yName: "loss", series: [{ name: "loss", points }] });
}

async function showCurves(current, epochs) {
  const evaluated = epochs.filter((entry) => Object.keys(entry.metrics).length > 0);
  await Promise.all([
    showIterations(current),
    lineChart($("chart-loss-epoch"), { title: "Loss per epoch", xName: "epoch", yName: "loss",
      series: [{ name: "loss", points: epochs.map((entry) => [entry.epoch, entry.loss]) }] }),
    lineChart($("chart-metrics"), { title: "Validation per epoch", xName: "epoch", yName: "",
      series: METRICS.map(([key, name]) => ({ name, points: evaluated.map((entry) => [entry.epoch, entry.metrics[key]]) })) }),
  ]);
}

async function updateMatrixEpochs(current, run, epochs) {
  const slider = $("matrix-epoch");
  if (run.spec.matrix === false) { text("matrix-note", "this run was started with matrix=false"); return; }
  const evaluated = epochs.filter((entry) => Object.keys(entry.metrics).length > 0).map((entry) => entry.epoch);
  const atLatest = Number(slider.value) >= current.matrixEpochs.length - 1;
  current.matrixEpochs = evaluated;
  slider.disabled = evaluated.length === 0;
  slider.max = String(Math.max(evaluated.length - 1, 0));
  if (atLatest) slider.value = slider.max;  // follow new evaluations unless one was chosen
  if (evaluated.length === 0) { text("matrix-note", "no evaluation yet"); return; }
  await showMatrix(current);
}

async function showMatrix(current) {
  const slider = $("matrix-epoch");
  const epoch = current.matrixEpochs[Number(slider.value)];
  if (epoch == null) return;
  slider.setAttribute("aria-valuetext", `epoch ${epoch}`);
  text("matrix-epoch-label", `epoch ${epoch} (${Number(slider.value) + 1} of ${current.matrixEpochs.length})`);
  let answer;
  try { answer = await current.ctx.api("GET", `/v1/runs/${current.runId}/confusion-matrix?epoch=${epoch}`); }
  catch (error) { text("matrix-note", error.status === 404 ? `epoch ${epoch}: not stored yet` : error.message); return; }
  if (page !== current) return;
  const element = $("chart-matrix");
  element.dataset.epoch = String(epoch);
  await heatMap(element, { title: `Epoch ${epoch}`, classes: answer.classes, matrix: answer.matrix });
  text("matrix-note", `rows: ground truth, columns: predicted, Background last; scores from ${answer.score_threshold}, `
                      + `IoU from ${answer.iou_threshold}`);
  const head = document.createElement("tr");
  head.append(Object.assign(document.createElement("th"), { textContent: "truth \\ predicted" }),
              ...answer.classes.map((name) => Object.assign(document.createElement("th"), { scope: "col", textContent: name })));
  const rows = answer.matrix.map((counts, index) => {
    const tr = document.createElement("tr");
    tr.append(Object.assign(document.createElement("th"), { scope: "row", textContent: answer.classes[index] }),
              ...counts.map((count) => cell(String(count))));
    return tr;
  });
  $("matrix-table").replaceChildren(head, ...rows);
}

async function loadPreviews(current) {
  if (current.run.spec.preview === false) { text("preview-note", "this run was started without previews"); return; }
  let answer;
  try { answer = await current.ctx.api("GET", `/v1/runs/${current.runId}/previews`); }
  catch (error) { text("preview-note", error.message); return; }
  if (page !== current) return;
  current.previews = answer.items;
  const select = $("preview-epoch");
  const chosen = select.value && select.selectedIndex !== select.options.length - 1 ? select.value : null;
  select.replaceChildren(...answer.items.map((item) => new Option(`epoch ${item.epoch}`, String(item.epoch))));
  select.disabled = answer.items.length === 0;
  if (answer.items.length === 0) { text("preview-note", "no previews yet"); return; }
  select.value = chosen ?? String(answer.items[answer.items.length - 1].epoch);
  text("preview-note", `ground truth and predicted boxes scoring at least ${answer.score_threshold}`);
  showPreviews(current);
}

function showPreviews(current) {
  const item = (current.previews || []).find((entry) => String(entry.epoch) === $("preview-epoch").value);
  $("preview-images").replaceChildren(...(item ? item.images : []).map((image) => {
    const figure = document.createElement("figure");
    const img = Object.assign(document.createElement("img"), { src: image.url, loading: "lazy",
      alt: `${image.file_name} at epoch ${item.epoch}: ground truth and predicted boxes` });
    figure.append(img, Object.assign(document.createElement("figcaption"), { textContent: image.file_name }));
    return figure;
  }));
}

async function showCheckpoints(current) {
  let answer;
  try { answer = await current.ctx.api("GET", `/v1/runs/${current.runId}/checkpoints`); }
  catch (error) { text("checkpoint-note", error.message); return; }
  if (page !== current) return;
  text("checkpoint-note", answer.items.length === 0 ? "none stored yet"
    : `${answer.items.length} stored${answer.resume_from ? `; a rerun continues from attempt ${answer.resume_from.attempt} epoch ${answer.resume_from.epoch}` : ""}`);
  $("checkpoint-rows").replaceChildren(...answer.items.map((item) => {
    const tr = document.createElement("tr");
    tr.dataset.epoch = String(item.epoch);
    tr.append(cell(String(item.attempt)), cell(String(item.epoch)), cell(`${(item.size_bytes / 1e6).toFixed(1)} MB`),
              cell(when(item.stored_at)), cell(item.best ? "★ best" : ""));
    return cardRow(tr, CHECKPOINT_COLUMNS);
  }));
}

async function showBest(current) {
  try {
    const best = await current.ctx.api("GET", `/v1/runs/${current.runId}/best-epoch`);
    text("run-best", `epoch ${best.epoch.epoch}: ${best.metric} ${number(best.value)}`);
  } catch (error) { text("run-best", error.status === 404 ? "no evaluation yet" : error.message); }
}

async function showConfig(current) {
  try {
    const answer = await current.ctx.api("GET", `/v1/runs/${current.runId}/config`);
    text("run-config", `# attempt ${answer.attempt}\n${answer.config}`);
  } catch (error) { text("run-config", error.status === 404 ? "not generated yet: the run has not started" : error.message); }
}

async function showWeights(current, run) {
  if (!current.ctx.may("models:read") || $("run-weights")) return;
  let models;
  try { models = await current.ctx.api("GET", "/v1/models?limit=500"); } catch { return; }
  const model = models.items.find((item) => item.run.id === run.id);
  if (!model || page !== current) return;
  const link = Object.assign(document.createElement("a"), { id: "run-weights", href: `/v1/models/${model.id}/weights`,
    textContent: `Download weights (model ${model.id.slice(0, 8)}, best epoch ${model.best_epoch ?? "–"})` });
  link.setAttribute("download", `${run.name}-${model.id.slice(0, 8)}.pth`);
  $("run-actions").append(link);
}
