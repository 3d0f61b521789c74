// Sweeps: the project's list, and one sweep's trials with their parameters and best metric,
// the metric against each searched parameter (one scatter per parameter), and the best trial.
// Live: the list follows GET /v1/sweeps/events, a sweep's page GET /v1/sweeps/{id}/events (its trials
// advancing, ASHA stopping one, the best changing), which ends once the sweep and its trials have.
import { followList } from "../live.js";
import { alertBox, api, chart, el, mayDo, number, redraw, runLink, statusCell, table, when,
         whenStopped } from "./common.js";

const bestOf = (sweep) => sweep.trials.find((t) => sweep.best && t.run_id === sweep.best.run_id);

async function list(root) {
  const error = alertBox("sweeps-error");
  const holder = el("div");
  root.append(el("h2", {}, "Sweeps"), error, holder);
  const draw = (sweeps) => redraw(holder, sweeps.length ? table("Sweeps, newest first", ["Sweep", "Status", "Searcher",
                                                                                        "Metric", "Trials", "Best",
                                                                                        "Best trial", "Created"],
    sweeps, (s) => {
      const best = bestOf(s);
      return [el("td", {}, el("a", { href: `/console/sweeps/${s.id}` }, s.name)), statusCell(s.status),
              s.spec.searcher.name, `${s.metric} (${s.mode})`, String(s.trials.length),
              s.best ? number(s.best.value) : "–", best ? el("td", {}, runLink(best.run_id, best.name)) : "–",
              when(s.created_at)];
    }, (s) => ({ dataset: { sweepId: s.id } }))
    : el("p", {}, "No sweep yet: `trainyard sweeps start -f sweep.yaml` starts one."));
  let page;
  try { page = await api("GET", "/v1/sweeps"); } catch (failure) { error.textContent = failure.message; return; }
  draw(page.items);
  followList("/v1/sweeps/events", "sweeps", page, (fresh) => draw(fresh.items), whenStopped(error));
}

const showValue = (v) => (typeof v === "number" ? String(Number(v.toPrecision(4))) : String(v));

async function scatters(root, sweep) {
  const names = [...new Set(sweep.trials.flatMap((t) => Object.keys(t.parameters)))];
  const section = el("section", { "aria-label": "Metric against each parameter" },
                     el("h3", {}, `${sweep.metric} against each searched parameter`));
  root.append(section);
  for (const name of names) {
    const scored = sweep.trials.filter((t) => t.best_value !== null && t.parameters[name] !== undefined);
    if (!scored.length) {
      // An empty pair of axes says nothing; the words say why.
      section.append(el("p", { dataset: { parameter: name } },
                        `${sweep.metric} against ${name}: no trial has reported ${sweep.metric} yet.`));
      continue;
    }
    const numeric = scored.every((t) => typeof t.parameters[name] === "number");
    const positive = numeric && scored.every((t) => t.parameters[name] > 0);
    const spread = positive && scored.length
      ? Math.max(...scored.map((t) => t.parameters[name])) / Math.min(...scored.map((t) => t.parameters[name])) : 1;
    const point = (t) => ({ value: [t.parameters[name], t.best_value], name: t.name,
                            itemStyle: sweep.best && t.run_id === sweep.best.run_id ? { borderWidth: 3,
                                                                                       borderColor: "#000" } : {} });
    const option = {
      title: { text: `${sweep.metric} against ${name}`, textStyle: { fontSize: 14 } },
      tooltip: { formatter: (p) => `${p.data.name}: ${name} ${showValue(p.data.value[0])}, ${sweep.metric} `
                                   + `${number(p.data.value[1])}` },
      grid: { top: 48, left: 56, right: 16 },
      // A range spanning decades (a log-uniform learning rate) reads on a log axis.
      xAxis: numeric ? { type: spread >= 100 ? "log" : "value", name, scale: true }
                     : { type: "category", name, data: [...new Set(scored.map((t) => String(t.parameters[name])))] },
      yAxis: { type: "value", name: sweep.metric, scale: true },
      series: [{ type: "scatter", symbolSize: 12, data: scored.map((t) => {
        const p = point(t);
        if (!numeric) p.value = [String(t.parameters[name]), t.best_value];
        return p;
      }) }],
      aria: { enabled: true },
    };
    const instance = await chart(section, option, `${sweep.metric} of each trial against its ${name}`);
    if (instance) instance.getDom().dataset.parameter = name;
  }
}

function drawSweep(holder, me, sweep, error) {
  const best = bestOf(sweep);
  const parts = [el("h2", {}, `Sweep ${sweep.name}`),
    el("p", { id: "sweep-status" }, `Status: ${sweep.status}. Metric ${sweep.metric}, `
       + `${sweep.mode === "max" ? "higher" : "lower"} is better.`
       + `${sweep.rung_epochs && sweep.rung_epochs.length ? ` Rungs at epochs ${sweep.rung_epochs.join(", ")}.` : ""}`),
    el("p", { id: "sweep-best" }, ...(best
      ? ["Best trial: ", runLink(best.run_id, best.name),
         ` with ${sweep.metric} ${number(sweep.best.value)} at epoch ${sweep.best.epoch}.`]
      : ["No trial has reported the metric yet."]))];
  if (mayDo(me, "runs:write") && sweep.status === "running") {
    const kill = el("button", { type: "button" }, "Kill sweep");
    // The page is live: the trials' new statuses arrive on the sweep's stream, no reload needed.
    kill.addEventListener("click", async () => {
      if (!window.confirm(`Kill sweep ${sweep.name}? Its queued and training trials end terminated.`)) return;
      try { await api("POST", `/v1/sweeps/${sweep.id}/kill`); kill.disabled = true; }
      catch (failure) { error.textContent = failure.message; }
    });
    parts.push(kill);
  }
  const names = [...new Set(sweep.trials.flatMap((t) => Object.keys(t.parameters)))];
  parts.push(table("Trials", ["Trial", "Status", ...names, "Epochs", `Best ${sweep.metric}`, "Best epoch", "Note"],
    sweep.trials, (t) => [el("td", {}, runLink(t.run_id, t.name), best && t.run_id === best.run_id ? " (best)" : ""),
                          statusCell(t.status), ...names.map((n) => (t.parameters[n] === undefined ? "–"
                            : showValue(t.parameters[n]))), String(t.epochs_completed), number(t.best_value),
                          t.best_epoch ?? "–", t.stopped ? t.stopped.message || `stopped at epoch ${t.stopped.epoch}` : t.message || ""],
    (t) => ({ dataset: { runId: t.run_id } })));
  const charts = el("div");
  parts.push(charts);
  redraw(holder, ...parts);
  return scatters(charts, sweep);
}

async function detail(root, me, sweepId) {
  const error = alertBox("sweep-error");
  const holder = el("div");
  root.append(el("p", {}, el("a", { href: "/console/sweeps" }, "All sweeps")), error, holder);
  let sweep;
  try { sweep = await api("GET", `/v1/sweeps/${sweepId}`); } catch (failure) {
    error.textContent = failure.message;
    return;
  }
  await drawSweep(holder, me, sweep, error);
  followList(`/v1/sweeps/${sweepId}/events`, "sweep", sweep, (fresh) => drawSweep(holder, me, fresh, error),
             whenStopped(error, "This sweep was removed."));
}

export async function render(root, { me, rest }) {
  if (rest[0]) await detail(root, me, rest[0]); else await list(root);
}
