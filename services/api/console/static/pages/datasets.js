// Datasets: the project's list, one dataset's classes with their box counts per split, and
// registering a new one, whose validation report (every problem, by file) is shown as the
// API returns it. Live: the list follows GET /v1/datasets/events (a dataset registered elsewhere, by the
// CLI or another person, appears); a dataset's page is not live, since a registered dataset never changes.
import { followList } from "../live.js";
import { alertBox, api, el, mayDo, redraw, short, table, when, whenStopped } from "./common.js";

const LISTED = 200;

function registerForm() {
  const report = el("div", { id: "validation-report", "aria-live": "polite" });
  const name = el("input", { id: "dataset-name", type: "text", required: true, autocomplete: "off" });
  const path = el("input", { id: "dataset-path", type: "text", required: true, autocomplete: "off",
                             placeholder: "/data/coco-shapes" });
  const form = el("form", { noValidate: true, "aria-label": "Register a dataset" },
    el("h3", {}, "Register a dataset"),
    el("p", {}, "A COCO dataset under one of the server's dataset roots: annotations/train.json, images/train, ",
       "annotations/val.json, images/val. Every image and annotation is checked before it is registered."),
    el("div", { className: "field" }, el("label", { for: "dataset-name" }, "Name"), name),
    el("div", { className: "field" }, el("label", { for: "dataset-path" }, "Path on the server"), path),
    el("button", { type: "submit" }, "Validate and register"), report);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    report.replaceChildren(el("p", {}, "Validating…"));
    try {
      const dataset = await api("POST", "/v1/datasets", { name: name.value, path: path.value });
      window.location.assign(`/console/datasets/${dataset.id}`);
    } catch (error) {
      const problems = (error.data && error.data.errors) || [];
      report.replaceChildren(el("p", { role: "alert", className: "error" }, `Not registered: ${error.message}`));
      if (problems.length) {
        report.append(table("Validation report", ["File", "Where in it", "Problem"], problems,
                            (p) => [el("td", {}, el("code", {}, p.file || "–")),
                                    el("td", {}, el("code", {}, p.field || (p.image_id != null ? `image ${p.image_id}` : "–"))),
                                    p.message]));
      }
    }
  });
  return form;
}

async function list(root, me) {
  const error = alertBox("datasets-error");
  const holder = el("div");
  root.append(el("h2", {}, "Datasets"), error, holder);
  const draw = (datasets) => redraw(holder, datasets.length ? table("Registered datasets", ["Name", "Id", "Classes",
                                                                                           "Training images",
                                                                                           "Training boxes",
                                                                                           "Validation images",
                                                                                           "Validation boxes",
                                                                                           "Registered"],
    datasets, (d) => [el("td", {}, el("a", { href: `/console/datasets/${d.id}` }, d.name)), short(d.id),
                      String(d.classes.length), String(d.train.image_count), String(d.train.box_count),
                      String(d.val.image_count), String(d.val.box_count), when(d.created_at)],
    (d) => ({ dataset: { datasetId: d.id } }))
    : el("p", {}, "No dataset is registered yet."));
  if (mayDo(me, "datasets:write")) root.append(registerForm());
  let page;
  try { page = await api("GET", `/v1/datasets?limit=${LISTED}`); } catch (failure) {
    error.textContent = failure.message;
    return;
  }
  draw(page.items);
  followList(`/v1/datasets/events?limit=${LISTED}`, "datasets", page, (fresh) => draw(fresh.items),
             whenStopped(error));
}

async function detail(root, datasetId) {
  const error = alertBox("dataset-error");
  root.append(el("p", {}, el("a", { href: "/console/datasets" }, "All datasets")), error);
  let d;
  try { d = await api("GET", `/v1/datasets/${datasetId}`); } catch (failure) {
    error.textContent = failure.message;
    return;
  }
  root.append(
    el("h2", {}, `Dataset ${d.name}`),
    el("dl", {}, el("dt", {}, "Id"), el("dd", {}, d.id), el("dt", {}, "Root"), el("dd", {}, el("code", {}, d.root)),
       el("dt", {}, "Registered"), el("dd", {}, when(d.created_at))),
    el("h3", {}, "Validation report"),
    el("p", { className: "valid" }, `Valid: ${d.classes.length} classes; training split ${d.train.image_count} `
      + `images and ${d.train.box_count} boxes, validation split ${d.val.image_count} images and `
      + `${d.val.box_count} boxes. It passed validation when registered and is checked again when a run starts.`),
    table("Boxes per class", ["Class", "Training boxes", "Validation boxes"], d.classes,
          (c) => [c, String(d.train.boxes_per_class[c] ?? 0), String(d.val.boxes_per_class[c] ?? 0)],
          (c) => ({ dataset: { className: c } })),
    el("h3", {}, "Files"),
    table("Files", ["Split", "Annotations", "Images"], [["training", d.train], ["validation", d.val]],
          ([split, s]) => [split, el("td", {}, el("code", {}, s.annotations)), el("td", {}, el("code", {}, s.images))]),
    el("p", {}, el("a", { href: `/console/new?dataset=${d.id}` }, "Train on this dataset")));
}

export async function render(root, { me, rest }) {
  if (rest[0]) await detail(root, rest[0]); else await list(root, me);
}
