// The model registry: every trained model with its run, best epoch and publication; one
// model's lineage (what it was fine-tuned from) and best epoch; publish and unpublish for
// keys with models:publish. Live: the list follows GET /v1/models/events (a model registered,
// published or unpublished, by anyone), a model's page GET /v1/models/{id}/events.
import { followList } from "../live.js";
import { alertBox, api, el, mayDo, number, redraw, runLink, short, table, when,
         whenStopped } from "./common.js";

const LISTED = 500;

function publishButton(model, after) {
  const verb = model.published ? "Unpublish" : "Publish";
  const button = el("button", { type: "button", "aria-label": `${verb} model ${short(model.id)}`,
                                dataset: { focusKey: `publication-${model.id}` } }, verb);
  button.addEventListener("click", async () => {
    if (!window.confirm(`${verb} model ${short(model.id)}?`)) return;
    try { await api("POST", `/v1/models/${model.id}/${verb.toLowerCase()}`); await after(); }
    catch (error) { document.getElementById("models-error").textContent = error.message; }
  });
  return button;
}

const publication = (model) => el("td", { className: model.published ? "published" : "" },
                                  model.published ? "published" : "not published");

async function list(root, me) {
  const error = alertBox("models-error");
  const holder = el("div");
  root.append(el("h2", {}, "Models"), error, holder);
  const draw = (models) => redraw(holder, models.length ? table("Registered models", ["Model", "Architecture", "Run",
                                                                                       "Epochs", "Best epoch", "Best mAP",
                                                                                       "Fine-tuned from", "Publication",
                                                                                       "Created", "Actions"],
    models, (m) => [el("td", {}, el("a", { href: `/console/models/${m.id}` }, short(m.id))), m.architecture,
                    el("td", {}, runLink(m.run.id, m.run.name)), String(m.epochs), m.best_epoch ?? "–",
                    number(m.best_metrics.bbox_mAP), m.base_model_id ? el("td", {}, el("a", {
                      href: `/console/models/${m.base_model_id}` }, short(m.base_model_id))) : "–",
                    publication(m), when(m.created_at),
                    el("td", {}, mayDo(me, "models:publish") ? publishButton(m, load) : null)],
    (m) => ({ dataset: { modelId: m.id } }))
    : el("p", {}, "No model yet: a run that succeeds registers its model."));
  let first = null;
  const load = async () => {
    try {
      const page = await api("GET", `/v1/models?limit=${LISTED}`);
      error.textContent = "";
      draw(page.items);
      first ??= page;
    } catch (failure) { error.textContent = failure.message; }
  };
  await load();
  if (first) {
    followList(`/v1/models/events?limit=${LISTED}`, "models", first, (page) => draw(page.items), whenStopped(error));
  }
}

async function detail(root, me, modelId) {
  const error = alertBox("models-error");
  const holder = el("div");
  root.append(el("p", {}, el("a", { href: "/console/models" }, "All models")), error, holder);
  const load = async () => {
    let model, lineage, best;
    try {
      [model, lineage] = await Promise.all([api("GET", `/v1/models/${modelId}`),
                                            api("GET", `/v1/models/${modelId}/lineage`)]);
    } catch (failure) { error.textContent = failure.message; return null; }
    try { best = await api("GET", `/v1/models/${modelId}/best-epoch`); } catch { best = null; }
    redraw(holder,
      el("h2", {}, `Model ${short(model.id)}`),
      el("dl", {}, el("dt", {}, "Architecture"), el("dd", {}, model.architecture),
         el("dt", {}, "Classes"), el("dd", {}, model.classes.join(", ")),
         el("dt", {}, "Trained by"), el("dd", {}, runLink(model.run.id, model.run.name),
                                          ` (${model.run.status || "removed"})`),
         el("dt", {}, "Epochs"), el("dd", {}, String(model.epochs)),
         el("dt", {}, "Publication"), el("dd", {}, model.published ? "published" : "not published", " ",
                                         mayDo(me, "models:publish") ? publishButton(model, load) : null),
         el("dt", {}, "Weights"), el("dd", {}, el("a", { href: `/v1/models/${model.id}/weights`,
                                                        download: `${model.id}.pth` }, "Download weights (.pth)"))),
      el("h3", {}, "Best epoch"),
      best ? table(`Best epoch by ${best.metric}: epoch ${best.epoch}`, ["Metric", "Value"],
                   Object.entries(best.metrics), ([name, value]) => [name, number(value)])
           : el("p", {}, "No evaluated epoch with bbox_mAP."),
      el("h3", {}, "Lineage"),
      table("This model first, then each model it was fine-tuned from", ["Model", "Architecture", "Run", "Best mAP",
                                                                          "Created"],
            lineage.items, (m) => [el("td", {}, el("a", { href: `/console/models/${m.id}`,
                                                          "aria-current": m.id === model.id ? "page" : "false" },
                                                    short(m.id))),
                                   m.architecture, el("td", {}, runLink(m.run.id, m.run.name)),
                                   number(m.best_metrics.bbox_mAP), when(m.created_at)]),
      el("p", {}, el("a", { href: `/console/new` }, "Fine-tune it in a new run"), " (choose it under “Start from a trained model”)."));
    return model;
  };
  const model = await load();
  // Its publication (by anyone) and its run's status, live; its lineage and best epoch are read again
  // with it. A removed model's stream says `gone`.
  if (model) {
    followList(`/v1/models/${modelId}/events`, "model", model, () => load(), whenStopped(error, "This model was removed."));
  }
}

export async function render(root, { me, rest }) {
  if (rest[0]) await detail(root, me, rest[0]); else await list(root, me);
}
