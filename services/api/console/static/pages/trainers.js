// Trainers: health (online, silent, lost) and draining as words, their accelerators, capacity
// and the runs of this project each one runs now.
import { alertBox, api, el, runLink, table, when } from "./common.js";

const accelerators = (trainer) => trainer.accelerators.map(
  (a) => `${a.name} ×${a.count}${a.memory_mb ? ` (${Math.round(a.memory_mb / 1024)} GiB)` : ""}`).join(", ") || "none";

function runsCell(trainer) {
  if (!trainer.runs.length) return el("td", {}, "idle");
  const items = trainer.runs.map((r) => el("li", {}, runLink(r.run_id), ` ${r.status}, attempt ${r.attempt}`));
  return el("td", {}, el("ul", { className: "plain" }, ...items));
}

export async function render(root) {
  const error = alertBox("trainers-error");
  root.append(el("h2", {}, "Trainers"), error);
  let trainers;
  try { trainers = await api("GET", "/v1/trainers"); } catch (failure) {
    error.textContent = failure.status === 403 ? "This key may not list trainers (it lacks trainers:read)."
      : failure.message;
    return;
  }
  const counts = { online: 0, silent: 0, lost: 0 };
  for (const t of trainers) counts[t.health] = (counts[t.health] || 0) + 1;
  const draining = trainers.filter((t) => t.draining).length;
  root.append(el("p", {}, `${counts.online} online, ${counts.silent} silent, ${counts.lost} lost, ${draining} draining.`));
  root.append(trainers.length ? table("Trainers", ["Trainer", "Host", "Health", "Draining", "Accelerators",
                                                   "Free / capacity", "Version", "Last heartbeat", "Runs now"],
    trainers, (t) => [t.id, t.host, el("td", { className: `status health-${t.health}` }, t.health),
                      t.draining ? "draining" : "no", accelerators(t), `${t.free} / ${t.capacity}`, t.version || "–",
                      when(t.last_seen), runsCell(t)],
    (t) => ({ dataset: { trainerId: t.id } }))
    : el("p", {}, "No trainer has sent a heartbeat yet."));
}
