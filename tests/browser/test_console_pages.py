"""The console's pages in a real headless Chromium against the real local stack: the new-run form
(problem details at the fields they name, a run started), datasets with their class counts and a
validation report, and, with real training, compare, models, trainers and a sweep.

Screenshots of every page go where the other browser tests put theirs (tests/browser/conftest.py)."""

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from shared.apikeys import Scope
from tests.browser.conftest import LAPTOP, PHONE, screenshot
from tests.e2e.conftest import FAST_LOSS_DETECTION, start_trainer
from tests.helpers import TERMINAL, create_key, http, wait_until
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco

TINY = {"architecture": "rtmdet-tiny", "epochs": 1, "batch_size": 4, "input_size": 64, "log_interval": 5}

# The machine is shared and busy: a page may take more than the default 5 s to show.
expect.set_options(timeout=20_000)
# Uncaught script errors of every page a test opened, checked at its end.
page_errors: list[str] = []


@pytest.fixture
def browser(chromium: Browser) -> Browser:
    page_errors.clear()
    return chromium


@pytest.fixture(autouse=True)
def no_script_errors() -> Iterator[None]:
    yield
    assert page_errors == []


def signed_in(browser: Browser, stack: LocalStack, key: str, viewport: ViewportSize = LAPTOP) -> Page:
    page = browser.new_page(viewport=viewport)
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.goto(f"{stack.api_url}/console/")
    expect(page.get_by_role("navigation", name="Pages")).to_be_hidden()  # nothing offered before sign-in
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()  # the session cookie is set
    expect(page.get_by_role("navigation", name="Pages")).to_be_visible()
    return page


def shoot(page: Page, name: str) -> None:
    screenshot(page, f"pages-{name}")


def fits_width(page: Page) -> bool:
    """Nothing but a table's own scroll box is wider than the window (readable on a phone)."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def register(admin: httpx.Client, tmp_path: Path, name: str, **sizes: int) -> dict[str, Any]:
    files = write_synthetic_coco(tmp_path / name, size=64, **sizes)
    answer = admin.post("/v1/datasets", json={"name": name, "path": str(files.root)})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def test_new_run_form_shows_problems_at_their_fields_then_starts_a_run(stack: LocalStack, tmp_path: Path,
                                                                       browser: Browser) -> None:
    stack.start_servers()
    stack.start_service("api")
    admin = http(stack, stack.admin_key)
    dataset = register(admin, tmp_path, "shapes", train_images=4, val_images=2)

    page = signed_in(browser, stack, stack.admin_key)
    page.get_by_role("link", name="New run").click()
    form = page.get_by_role("form", name="New run")
    expect(form.get_by_label("Architecture")).to_have_value("rtmdet-tiny")
    # The catalogue's defaults fill the parameters; a null default is left empty.
    catalogue = {p["name"]: p for p in admin.get("/v1/architectures").json()[0]["parameters"]}
    expect(page.locator("#field-batch_size")).to_have_value(str(catalogue["batch_size"]["default"]))
    expect(page.locator("#field-learning_rate")).to_have_value("")
    shoot(page, "new-run")

    page.locator("#field-name").fill("from-the-form")
    page.locator("#field-input_size").fill("100")  # not a multiple of 32
    page.locator("#field-checkpoint-keep").fill("0")  # nested: checkpoint.keep >= 1
    page.get_by_role("button", name="Start run").click()
    expect(page.locator("#field-input_size-error")).to_contain_text("multiple of 32")
    expect(page.locator("#field-input_size")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#field-checkpoint-keep-error")).to_contain_text("greater than or equal to 1")
    expect(page.locator("#field-input_size")).to_be_focused()
    expect(page.locator("#field-epochs")).not_to_have_attribute("aria-invalid", "true")
    assert admin.get("/v1/runs").json()["items"] == []
    shoot(page, "new-run-problems")

    page.locator("#field-input_size").fill("64")
    page.locator("#field-checkpoint-keep").fill("3")
    page.locator("#field-checkpoint-interval").fill("2")
    page.locator("#field-epochs").fill("1")
    page.locator("#field-learning_rate").fill("0.002")
    page.locator("#field-checkpoint-strategy").select_option("best")
    page.get_by_role("button", name="Start run").click()
    # /console/runs/<id> is the run page (redirected to its hash address).
    page.wait_for_url(re.compile(r"/console/#/runs/[0-9a-f]{32}$"))
    run_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#run-title")).to_have_text("Run from-the-form")
    spec = admin.get(f"/v1/runs/{run_id}").json()["spec"]
    assert (spec["name"], spec["dataset_id"], spec["input_size"], spec["epochs"]) == (
        "from-the-form", dataset["id"], 64, 1)
    assert spec["learning_rate"] == 0.002 and spec["checkpoint"] == {"strategy": "best", "metric": "bbox_mAP",
                                                                   "keep": 3, "interval": 2}
    assert "limit" not in spec or spec["limit"] is None  # the limit's metric alone sets no limit

    phone = signed_in(browser, stack, stack.admin_key, PHONE)
    phone.goto(f"{stack.api_url}/console/new")
    expect(phone.get_by_role("button", name="Start run")).to_be_visible()
    assert fits_width(phone)
    shoot(phone, "new-run-phone")

    # A key that may only read runs is not offered the form.
    reader = signed_in(browser, stack, create_key(stack, "default", [Scope.RUNS_READ], name="reader"))
    reader.goto(f"{stack.api_url}/console/new")
    expect(reader.get_by_text("lacks the runs:write scope")).to_be_visible()
    assert reader.get_by_role("button", name="Start run").count() == 0


def test_datasets_page_lists_counts_per_class_and_shows_a_validation_report(stack: LocalStack, tmp_path: Path,
                                                                            browser: Browser) -> None:
    stack.start_servers()
    stack.start_service("api")
    admin = http(stack, stack.admin_key)
    dataset = register(admin, tmp_path, "shapes", train_images=6, val_images=3)
    broken = write_synthetic_coco(tmp_path / "broken", train_images=2, val_images=1, size=64)
    annotations = json.loads(broken.val_annotations.read_text())
    annotations["annotations"][0]["bbox"] = [50, 50, 40, 40]  # runs out of its 64 px image
    broken.val_annotations.write_text(json.dumps(annotations))

    page = signed_in(browser, stack, stack.admin_key)
    page.get_by_role("link", name="Datasets").click()
    row = page.locator(f"tr[data-dataset-id='{dataset['id']}']")
    expect(row).to_contain_text("shapes")
    expect(row.locator("td").nth(2)).to_have_text(str(len(dataset["classes"])))
    expect(row.locator("td").nth(4)).to_have_text(str(dataset["train"]["box_count"]))
    shoot(page, "datasets")

    registration = page.get_by_role("form", name="Register a dataset")
    registration.get_by_label("Name", exact=True).fill("broken")
    registration.get_by_label("Path on the server").fill(str(broken.root))
    registration.get_by_role("button", name="Validate and register").click()
    report = page.get_by_role("table", name="Validation report")
    expect(report).to_contain_text("val.json")
    problems = http(stack, stack.admin_key).post("/v1/datasets", json={"name": "b", "path": str(broken.root)})
    assert problems.status_code == 422
    expect(report.locator("tbody tr")).to_have_count(len(problems.json()["errors"]))
    shoot(page, "datasets-validation-report")

    row.get_by_role("link", name="shapes").click()
    expect(page.get_by_role("heading", name="Dataset shapes")).to_be_visible()
    for name in dataset["classes"]:
        cells = page.locator(f"tr[data-class-name='{name}'] td")
        expect(cells.nth(1)).to_have_text(str(dataset["train"]["boxes_per_class"].get(name, 0)))
        expect(cells.nth(2)).to_have_text(str(dataset["val"]["boxes_per_class"].get(name, 0)))
    shoot(page, "dataset")

    phone = signed_in(browser, stack, stack.admin_key, PHONE)
    phone.goto(f"{stack.api_url}/console/datasets/{dataset['id']}")
    expect(phone.get_by_role("heading", name="Dataset shapes")).to_be_visible()
    assert fits_width(phone)
    shoot(phone, "dataset-phone")


def curve_series_counts(page: Page) -> dict[str, int] | None:
    """Per chart on the page (its data-metric or data-parameter), how many series ECharts draws, once
    ECharts (loaded by the page after its data) has drawn every chart."""
    page.wait_for_function("""() => { const boxes = [...document.querySelectorAll('.chart')];
        return boxes.length && window.echarts && boxes.every((box) => window.echarts.getInstanceByDom(box)); }""")
    counts: dict[str, int] | None = page.evaluate("""() => window.echarts ? Object.fromEntries(
        [...document.querySelectorAll('.chart')]
        .map((box) => [box.dataset.metric || box.dataset.parameter,
                       window.echarts.getInstanceByDom(box).getOption().series.length])) : null""")
    return counts


@pytest.mark.training
def test_compare_models_trainers_and_sweep_pages_with_real_training(stack: LocalStack, tmp_path: Path,
                                                                     browser: Browser) -> None:
    stack.start_servers()
    stack.start_service("metrics")
    stack.start_service("scheduler", **FAST_LOSS_DETECTION)
    stack.start_service("api", **FAST_LOSS_DETECTION)
    admin = http(stack, stack.admin_key)
    dataset = register(admin, tmp_path, "shapes", train_images=8, val_images=2)
    # The trainers page is open before any trainer starts: they come online on it, live.
    live = signed_in(browser, stack, stack.admin_key)
    live.goto(f"{stack.api_url}/console/trainers")
    expect(live.get_by_text("No trainer has sent a heartbeat yet.")).to_be_visible()
    live.evaluate("window.notReloaded = true")  # a mark on the window survives everything but a reload
    processes = {trainer: start_trainer(stack, trainer) for trainer in ("console-trainer-1", "console-trainer-2")}
    for trainer in processes:
        expect(live.locator(f"tr[data-trainer-id='{trainer}'] td").nth(2)).to_have_text("online", timeout=120_000)
    # A grid sweep of two 1-epoch trials: two finished runs whose specs differ in the learning rate.
    base = {key: value for key, value in TINY.items()} | {"dataset_id": dataset["id"]}
    answer = admin.post("/v1/sweeps", json={
        "name": "console-sweep", "base": base, "searcher": {"name": "grid"}, "metric": "bbox_mAP_50",
        "space": {"learning_rate": {"type": "log_uniform", "low": 1e-3, "high": 4e-3, "grid_points": 2}},
        "trials": 2, "max_concurrent": 2})
    assert answer.status_code == 201, answer.text
    sweep = answer.json()
    trial_ids = [trial["run_id"] for trial in sweep["trials"]]

    # The models page, open before any model exists, shows each as its run succeeds.
    registry = signed_in(browser, stack, stack.admin_key)
    registry.goto(f"{stack.api_url}/console/models")
    expect(registry.get_by_text("No model yet")).to_be_visible()
    registry.evaluate("window.notReloaded = true")

    page = signed_in(browser, stack, stack.admin_key)
    trainers = wait_until(lambda: len(t := admin.get("/v1/trainers").json()) == 2 and t, 120, "two trainers")
    page.goto(f"{stack.api_url}/console/trainers")
    for trainer in trainers:
        row = page.locator(f"tr[data-trainer-id='{trainer['id']}']")
        expect(row.locator("td").nth(2)).to_have_text("online")
        expect(row.locator("td").nth(4)).to_contain_text(f"{trainer['accelerators'][0]['name']} \u00d7")
        expect(row.locator("td").nth(5)).to_contain_text(f" / {trainer['capacity']}")  # free changes as runs start
    shoot(page, "trainers")

    wait_until(lambda: admin.get(f"/v1/sweeps/{sweep['id']}").json()["status"] != "running", 900, "the sweep to end")
    sweep = admin.get(f"/v1/sweeps/{sweep['id']}").json()
    assert {trial["status"] for trial in sweep["trials"]} <= TERMINAL

    # Compare: select the two trials in the runs table, which shows each one's best mAP and its epoch.
    page.get_by_role("link", name="Runs").click()
    for trial_id in trial_ids:
        best = admin.get(f"/v1/runs/{trial_id}").json()["best"]
        expect(page.locator(f"tr[data-run-id='{trial_id}'] td.best")).to_have_text(
            f"{best['value']:.3f} (epoch {best['epoch']})" if best else "\u2013")
    for trial in sweep["trials"]:
        page.get_by_label(f"Select run {trial['name']} for comparison").check()
    page.get_by_role("button", name="Compare selected (2)").click()
    page.wait_for_url(re.compile(r"/console/compare\?ids="))
    answer = admin.get("/v1/runs/compare", params={"ids": ",".join(sorted(
        trial_ids, key=lambda run_id: page.url.index(run_id)))})
    assert answer.status_code == 200, answer.text
    comparison = answer.json()
    for run in comparison["runs"]:
        cells = page.locator(f"tr[data-run-id='{run['id']}'] td")
        expect(cells.nth(0)).to_have_text(run["name"])
        expect(cells.nth(1)).to_have_text(run["status"])
        final = run["final_metrics"].get("bbox_mAP_50")
        expect(cells.nth(6)).to_have_text("\u2013" if final is None else f"{final:.3f}")
    differing = page.locator("tr[data-field='learning_rate'] td")
    expect(differing.nth(1)).to_have_text(f"{comparison['spec_differences'][0]['values'][0]:.6g}")
    assert [d["field"] for d in comparison["spec_differences"]] == ["learning_rate"]
    expect(page.locator("pre.diff")).to_have_text(comparison["config_differences"][0]["diff"])
    counts = curve_series_counts(page)  # ECharts, installed by scripts/setup.sh: one line per run on every curve
    assert counts and set(counts) >= {"loss", "bbox_mAP", "bbox_mAP_50"} and set(counts.values()) == {2}, counts
    shoot(page, "compare")

    phone = signed_in(browser, stack, stack.admin_key, PHONE)
    phone.goto(page.url)
    expect(phone.get_by_role("table", name="Final and best metrics")).to_be_visible()
    expect(phone.locator(".chart")).to_have_count(len(counts))
    assert fits_width(phone)
    shoot(phone, "compare-phone")

    # Sweeps: the list, the sweep's trials, the best one named, one scatter per searched parameter.
    page.get_by_role("link", name="Sweeps").click()
    expect(page.locator(f"tr[data-sweep-id='{sweep['id']}']")).to_contain_text(sweep["status"])
    shoot(page, "sweeps")
    page.get_by_role("link", name="console-sweep", exact=True).click()
    expect(page.get_by_role("table", name="Trials").locator("tbody tr")).to_have_count(2)
    if sweep["best"]:
        best = next(t for t in sweep["trials"] if t["run_id"] == sweep["best"]["run_id"])
        expect(page.locator("#sweep-best")).to_contain_text(best["name"])
        expect(page.locator(f"tr[data-run-id='{best['run_id']}'] td").first).to_contain_text("(best)")
    assert curve_series_counts(page) == {"learning_rate": 1}
    shoot(page, "sweep")

    # Models: both trials registered one, and the page open since before shows them; publish one from the
    # page.
    models = wait_until(lambda: len(m := admin.get("/v1/models").json()["items"]) == 2 and m, 60, "two models")
    for model in models:
        expect(registry.locator(f"tr[data-model-id='{model['id']}'] td").nth(7)).to_have_text("not published")
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("link", name="Models").click()
    target = models[0]
    row = page.locator(f"tr[data-model-id='{target['id']}']")
    expect(row).to_contain_text("not published")
    row.get_by_role("button", name=f"Publish model {target['id'][:8]}").click()
    expect(row.locator("td").nth(7)).to_have_text("published")
    # Redrawn, the row's button changed its label; the keyboard is still on it.
    expect(row.get_by_role("button", name=f"Unpublish model {target['id'][:8]}")).to_be_focused()
    assert admin.get(f"/v1/models/{target['id']}").json()["published"] is True
    shoot(page, "models")
    row.get_by_role("link", name=target["id"][:8]).click()
    expect(page.get_by_role("heading", name=f"Model {target['id'][:8]}")).to_be_visible()
    lineage = admin.get(f"/v1/models/{target['id']}/lineage").json()["items"]
    expect(page.get_by_role("table", name=re.compile("fine-tuned from")).locator("tbody tr")).to_have_count(
        len(lineage))
    best_epoch = admin.get(f"/v1/models/{target['id']}/best-epoch")
    if best_epoch.status_code == 200:
        expect(page.get_by_role("table", name=re.compile("Best epoch by"))).to_contain_text(
            f"epoch {best_epoch.json()['epoch']}")
    shoot(page, "model")
    # Published on this page, seen on the other without a reload; unpublished elsewhere (the API), seen
    # on both.
    expect(registry.locator(f"tr[data-model-id='{target['id']}'] td").nth(7)).to_have_text("published")
    assert admin.post(f"/v1/models/{target['id']}/unpublish").status_code == 200
    expect(registry.locator(f"tr[data-model-id='{target['id']}'] td").nth(7)).to_have_text("not published")
    expect(page.get_by_role("button", name=f"Publish model {target['id'][:8]}")).to_be_visible()
    assert registry.evaluate("window.notReloaded === true")

    # A key without models:publish is offered no publish button.
    reader = signed_in(browser, stack, create_key(stack, "default", [Scope.MODELS_READ, Scope.RUNS_READ],
                                                  name="reader"))
    reader.goto(f"{stack.api_url}/console/models")
    expect(reader.locator(f"tr[data-model-id='{target['id']}']")).to_contain_text("published")
    assert reader.get_by_role("button", name=re.compile("ublish model")).count() == 0

    # Draining and lost, live: a 3-epoch run on one trainer, which is told to leave (SIGTERM) while it
    # trains; then the other trainer is killed (SIGKILL).
    run = admin.post("/v1/runs", json={**base, "name": "drained", "epochs": 3})
    assert run.status_code == 201, run.text
    running = wait_until(lambda: (r := admin.get(f"/v1/runs/{run.json()['id']}").json())["status"] == "in_progress"
                         and r, 300, "the run to train")
    leaving = running["trainer_id"]
    row = live.locator(f"tr[data-trainer-id='{leaving}'] td")
    expect(row.nth(8)).to_contain_text(f"{running['id'][:8]} in_progress")
    # Every redraw's draining cell is recorded: the drain lasts only until the epoch in progress ends.
    live.evaluate("""(id) => { window.drainingSeen = [];
        new MutationObserver(() => { const cell = document.querySelector(`tr[data-trainer-id='${id}'] td:nth-child(4)`);
                                     if (cell) window.drainingSeen.push(cell.textContent); })
            .observe(document.getElementById('trainers-live'), { childList: true, subtree: true }); }""", leaving)
    processes[leaving].send_signal(signal.SIGTERM)
    live.wait_for_function("window.drainingSeen.includes('draining')", timeout=120_000)
    shoot(live, "trainers-draining")
    assert processes[leaving].wait(timeout=180) == 0
    staying = next(trainer for trainer in processes if trainer != leaving)
    processes[staying].kill()
    processes[staying].wait()
    expect(live.locator(f"tr[data-trainer-id='{staying}'] td").nth(2)).to_have_text("lost", timeout=60_000)
    shoot(live, "trainers-lost")
    assert live.evaluate("window.notReloaded === true")
