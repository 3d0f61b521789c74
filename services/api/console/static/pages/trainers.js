// Trainers: health (online, silent, lost) and draining as words, their accelerators, capacity
// and the runs of this project each one runs now. Live: GET /v1/trainers/events sends the list
// again whenever it changes (a trainer joins, drains, goes silent or lost, takes or ends a run).
import { followList } from "../live.js";
import { alertBox, api, el, redraw, runLink, table, when, whenStopped } from "./common.js";

const accelerators = (trainer) => trainer.accelerators.map(
  (a) => `${a.name} ×${a.count}${a.memory_mb ? ` (${Math.round(a.memory_mb / 1024)} GiB)` : ""}`).join(", ") || "none";

function runsCell(trainer) {
  if (!trainer.runs.length) return el("td", {}, "idle");
  const items = trainer.runs.map((r) => el("li", {}, runLink(r.run_id), ` ${r.status}, attempt ${r.attempt}`));
  return el("td", {}, el("ul", { className: "plain" }, ...items));
}

function draw(summary, holder, trainers) {
  const counts = { online: 0, silent: 0, lost: 0 };
  for (const t of trainers) counts[t.health] = (counts[t.health] || 0) + 1;
  const draining = trainers.filter((t) => t.draining).length;
  const text = `${counts.online} online, ${counts.silent} silent, ${counts.lost} lost, ${draining} draining.`;
  if (summary.textContent !== text) summary.textContent = text;
  redraw(holder,
    trainers.length ? table("Trainers", ["Trainer", "Host", "Health", "Draining", "Accelerators",
                                         "Free / capacity", "Version", "Last heartbeat", "Runs now"],
      trainers, (t) => [t.id, t.host, el("td", { className: `status health-${t.health}` }, t.health),
                        t.draining ? "draining" : "no", accelerators(t), `${t.free} / ${t.capacity}`, t.version || "–",
                        when(t.last_seen), runsCell(t)],
      (t) => ({ dataset: { trainerId: t.id } }))
      : el("p", {}, "No trainer has sent a heartbeat yet."));
}

export async function render(root) {
  const error = alertBox("trainers-error");
  // The counts are announced (politely) as they change; the table itself is not: too chatty.
  const summary = el("p", { id: "trainer-counts", "aria-live": "polite" });
  const holder = el("div", { id: "trainers-live" });
  root.append(el("h2", {}, "Trainers"), error, summary, holder);
  let trainers;
  try { trainers = await api("GET", "/v1/trainers"); } catch (failure) {
    error.textContent = failure.status === 403 ? "This key may not list trainers (it lacks trainers:read)."
      : failure.message;
    return;
  }
  draw(summary, holder, trainers);
  followList("/v1/trainers/events", "trainers", trainers, (fresh) => draw(summary, holder, fresh),
             whenStopped(error));
}
