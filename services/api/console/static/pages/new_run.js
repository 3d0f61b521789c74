// The new-run form: built from the architecture catalogue (its parameters and defaults), the
// project's datasets and registered models, the accelerators trainers offer, and the
// checkpoint and limit settings. The API validates (the form has `novalidate`): its problem
// details name a field path, and each message is shown at the field it names.
import { alertBox, api, el, mayDo, short } from "./common.js";

// Used when the OpenAPI schema cannot be read; the schema is the source (shared/specs.py).
const FALLBACK_METRICS = ["bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "precision_50", "recall_50", "val_loss"];
const STRATEGIES = [["latest", "latest epochs only"], ["best", "latest and the best by the metric"],
                    ["lowest_val_loss", "latest and the lowest validation loss"]];

const fieldId = (path) => `field-${path.replace(/\./g, "-")}`;

// One labelled control with its error line, described by both its help and its error.
function field(path, label, control, help) {
  control.id = fieldId(path);
  control.name = path;
  control.dataset.field = path;
  const error = el("p", { id: `${control.id}-error`, className: "field-error", "aria-live": "polite" });
  const described = [error.id];
  const parts = [el("label", { for: control.id }, label), control];
  if (help) {
    parts.push(el("small", { id: `${control.id}-help` }, help));
    described.push(`${control.id}-help`);
  }
  control.setAttribute("aria-describedby", described.join(" "));
  return el("div", { className: "field" }, ...parts, error);
}

const options = (pairs, chosen) => pairs.map(([value, text]) => el("option", { value, selected: value === chosen }, text));

function numberInput(value, step, min, max) {
  const input = el("input", { type: "number", inputMode: "decimal", step: step ?? "any" });
  if (value !== null && value !== undefined) input.value = String(value);
  if (min !== null && min !== undefined) input.min = String(min);
  if (max !== null && max !== undefined) input.max = String(max);
  return input;
}

function parameterField(parameter) {
  let control;
  if (parameter.choices) {
    control = el("select", {}, ...options(parameter.choices.map((c) => [c, c]), parameter.default));
  } else {
    control = numberInput(parameter.default, parameter.type === "int" ? "1" : "any", parameter.minimum,
                          parameter.maximum);
    if (parameter.default === null) control.placeholder = "default";
    control.dataset.kind = parameter.type;
  }
  const range = parameter.minimum !== null && parameter.minimum !== undefined
    ? ` (${parameter.minimum} to ${parameter.maximum})` : "";
  return field(parameter.name, parameter.name.replace(/_/g, " "), control, `${parameter.description}${range}`);
}

async function trackedMetrics() {
  try {
    const schema = await (await fetch("/openapi.json")).json();
    return schema.components.schemas.CheckpointPolicy.properties.metric.enum || FALLBACK_METRICS;
  } catch { return FALLBACK_METRICS; }
}

async function optional(call) {
  try { return await call(); } catch { return null; }
}

// The spec to POST: empty inputs are left out, so the API's defaults apply.
function specOf(form) {
  const spec = {};
  const put = (path, value) => {
    const parts = path.split(".");
    let node = spec;
    for (const part of parts.slice(0, -1)) node = node[part] ??= {};
    node[parts.at(-1)] = value;
  };
  for (const control of form.querySelectorAll("[data-field]")) {
    const path = control.dataset.field;
    if (control.type === "checkbox") { put(path, control.checked); continue; }
    if (control.value === "") continue;
    put(path, control.type === "number" ? Number(control.value) : control.value);
  }
  if (spec.limit && spec.limit.value === undefined) delete spec.limit;  // a metric alone is no limit
  return spec;
}

function clearErrors(form) {
  form.querySelectorAll(".field-error").forEach((p) => { p.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach((c) => c.removeAttribute("aria-invalid"));
}

// Each problem at its field: the deepest control whose path starts the problem's path.
function showProblems(form, error, summary) {
  const problems = error.data && error.data.errors ? error.data.errors : [];
  const unplaced = [];
  for (const problem of problems) {
    const path = problem.field || "";
    const control = [...form.querySelectorAll("[data-field]")]
      .filter((c) => path === c.dataset.field || path.startsWith(`${c.dataset.field}.`))
      .sort((a, b) => b.dataset.field.length - a.dataset.field.length)[0];
    if (!control) { unplaced.push(problem); continue; }
    control.setAttribute("aria-invalid", "true");
    document.getElementById(`${control.id}-error`).textContent = problem.message;
  }
  summary.textContent = unplaced.length || !problems.length ? error.message
    : `The run was not started: ${problems.length} field${problems.length > 1 ? "s need" : " needs"} a change.`;
  const first = form.querySelector("[aria-invalid]");
  if (first) first.focus();
}

export async function render(root, { me, query }) {
  root.append(el("h2", {}, "New run"));
  if (!mayDo(me, "runs:write")) {
    root.append(el("p", {}, "This key may not start runs (it lacks the runs:write scope)."));
    return;
  }
  const [architectures, datasets, models, trainers, metrics] = await Promise.all([
    api("GET", "/v1/architectures"),
    optional(() => api("GET", "/v1/datasets?limit=200")),
    optional(() => api("GET", "/v1/models?limit=500")),
    optional(() => api("GET", "/v1/trainers")),
    trackedMetrics(),
  ]);
  if (!datasets || !datasets.items.length) {
    root.append(el("p", {}, "No dataset is registered yet: ", el("a", { href: "/console/datasets" }, "register one"),
                   " first."));
    return;
  }
  const accelerators = new Set(["CPU"]);
  for (const trainer of trainers || []) for (const a of trainer.accelerators) accelerators.add(a.name);

  const summary = alertBox("new-run-error");
  const form = el("form", { noValidate: true, "aria-label": "New run" });
  const architecture = el("select", {}, ...options(architectures.map((a) => [a.id, `${a.id}: ${a.description}`]),
                                                   architectures[0].id));
  const baseModel = el("select", {});
  const parameters = el("fieldset", {}, el("legend", {}, "Parameters of the architecture"));
  const refresh = () => {
    const chosen = architectures.find((a) => a.id === architecture.value);
    parameters.replaceChildren(el("legend", {}, `Parameters of ${chosen.id}`),
                               ...chosen.parameters.map(parameterField));
    const fitting = ((models && models.items) || []).filter((m) => m.architecture === chosen.id);
    baseModel.replaceChildren(el("option", { value: "" }, "none: random initialisation"),
      ...fitting.map((m) => el("option", { value: m.id },
                                `${short(m.id)} from ${m.run.name || short(m.run.id)}${m.published ? " (published)" : ""}`)));
  };
  architecture.addEventListener("change", refresh);
  refresh();

  form.append(
    el("fieldset", {}, el("legend", {}, "What to train"),
       field("name", "Name", el("input", { type: "text", required: true, autocomplete: "off" })),
       field("dataset_id", "Dataset", el("select", {}, ...options(datasets.items.map(
         (d) => [d.id, `${d.name} (${d.classes.length} classes, ${d.train.image_count} training images)`]),
         query.get("dataset")))),
       field("architecture", "Architecture", architecture),
       field("base_model_id", "Start from a trained model", baseModel,
             "transfer learning from the registry; only models of the same architecture")),
    parameters,
    el("fieldset", {}, el("legend", {}, "Where it trains"),
       field("accelerator.name", "Accelerator", el("select", {}, ...options([...accelerators].map((a) => [a, a]), "CPU")),
             trainers ? "offered by the trainers online now" : "this key cannot list trainers"),
       field("accelerator.count", "Accelerators", numberInput(1, "1", 1, 16)),
       field("priority", "Priority", numberInput(0, "1", -100, 100), "higher is placed first"),
       field("max_attempts", "Attempts", numberInput(3, "1", 1, 20)),
       field("execution_timeout_s", "Time limit (s)", numberInput(3600, "1", 10, 604800))),
    el("fieldset", {}, el("legend", {}, "Checkpoints and limits"),
       field("checkpoint.strategy", "Checkpoint strategy", el("select", {}, ...options(STRATEGIES, "latest"))),
       field("checkpoint.metric", "Checkpoint metric", el("select", {}, ...options(metrics.map((m) => [m, m]), "bbox_mAP"))),
       field("checkpoint.keep", "Latest checkpoints kept", numberInput(2, "1", 1, 100)),
       field("checkpoint.interval", "Save a checkpoint every (epochs)", numberInput(1, "1", 1, 1000),
             "and the last epoch and each new best; a resumed run retrains up to interval - 1 epochs"),
       field("limit.metric", "Stop when metric", el("select", {}, ...options(metrics.map((m) => [m, m]), "bbox_mAP"))),
       field("limit.value", "reaches", numberInput(null, "any"), "leave empty for no limit")),
    el("fieldset", {}, el("legend", {}, "Evaluation"),
       field("matrix", "Confusion matrix at each evaluation", el("input", { type: "checkbox", checked: true })),
       field("preview", "Preview images at each evaluation", el("input", { type: "checkbox" }))),
    el("button", { type: "submit" }, "Start run"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    summary.textContent = "";
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const run = await api("POST", "/v1/runs", specOf(form));
      summary.textContent = `Started ${run.name}.`;
      window.location.assign(`/console/runs/${run.id}`);
    } catch (error) {
      showProblems(form, error, summary);
    } finally { button.disabled = false; }
  });
  root.append(summary, form);
}
