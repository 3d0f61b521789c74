"""The run page and the live runs table in a real headless Chromium against the whole local stack
training a tiny run for real: a read-only key is offered no kill and refused one; the table's progress
bar and the page's curves advance without a reload; the heat map holds what the API serves; Kill ends
the run `terminated`. One stack and one run serve the module's tests, in file order."""

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from shared.apikeys import Scope
from tests.browser.conftest import LAPTOP, PHONE, screenshot, watch_errors
from tests.helpers import create_key, http, wait_status
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import TrainyardClient

pytestmark = pytest.mark.training
TRAINER_ENV = {"TRAINYARD_THREADS": "1", "TRAINYARD_HEARTBEAT_INTERVAL_S": "1"}
# As live.js: the runs table follows at most this many runs over SSE at once.
MAX_TABLE_STREAMS = 3
# Long enough that it is still training when killed; the test ends it well before.
EPOCHS = 60
LIVE_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def live_stack(servers: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    namespace = "t" + uuid.uuid4().hex[:10]
    stack = LocalStack(tmp_path_factory.mktemp("console-run") / "stack", nats_url=servers.nats_url,
                       mongo_url=servers.mongo_url, mongo_db=namespace, subject_prefix=namespace)
    stack.data_dir.mkdir(parents=True)
    stack.start_servers()
    for service in ("metrics", "scheduler", "api"):
        stack.start_service(service)
    stack.start_service("trainer", name="console-trainer", TRAINYARD_TRAINER_ID="console-trainer", **TRAINER_ENV)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def client(live_stack: LocalStack) -> Iterator[TrainyardClient]:
    with TrainyardClient(live_stack.api_url, live_stack.admin_key) as api:
        yield api


@pytest.fixture(scope="module")
def training_run(client: TrainyardClient, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    files = write_synthetic_coco(tmp_path_factory.mktemp("shapes") / "shapes", train_images=8, val_images=2, size=64)
    dataset = client.datasets.register("shapes", str(files.root))
    return dict(client.runs.start({"name": "live-run", "dataset_id": dataset["id"], "architecture": "rtmdet-tiny",
                                   "epochs": EPOCHS, "batch_size": 4, "input_size": 64, "log_interval": 1,
                                   "preview": True, "preview_images": 2}))


def read(stack: LocalStack) -> TrainyardClient:
    """A client for one look after a long wait in the browser: a connection idle as long as the server's
    keep-alive (5 s, httpx's default expiry too) may be closed by it just as it is reused."""
    return TrainyardClient(stack.api_url, stack.admin_key)


def sign_in_with_key(page: Page, url: str, key: str) -> None:
    page.goto(url)
    expect(page.get_by_label("API key")).to_be_visible()
    screenshot(page, "sign-in")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def fits_phone(page: Page, shot: str) -> None:
    """Nothing is wider than the phone's window, once the page has laid itself out again: the charts
    redraw at the new width on the window's resize event, which a measure right away may precede
    (seen once in CI). The screenshot is taken either way, to see what did not fit."""
    try:
        page.wait_for_function("document.documentElement.scrollWidth <= window.innerWidth", timeout=10_000)
    finally:
        screenshot(page, shot)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def number_of(page: Page, selector: str, attribute: str) -> float:
    return float(page.locator(selector).get_attribute(attribute) or 0)


def test_read_only_key_sees_no_kill_and_is_refused(live_stack: LocalStack, client: TrainyardClient,
                                                   training_run: dict[str, Any], chromium: Browser) -> None:
    run_id = training_run["id"]
    wait_status(client, run_id, {"in_progress"}, timeout=180)
    reader_key = create_key(live_stack, "default", [Scope.RUNS_READ], name="console-reader")
    page = chromium.new_page(viewport=LAPTOP)
    errors = watch_errors(page)
    # The run page's own address: it asks for a key first, then shows the run.
    sign_in_with_key(page, f"{live_stack.api_url}/console/runs/{run_id}", reader_key)
    expect(page.locator("#run-status")).to_have_text("in_progress")
    expect(page.locator("#run-where")).to_contain_text("console-trainer")
    assert page.get_by_role("button", name="Kill run live-run").count() == 0
    assert page.get_by_role("button", name="Rerun run live-run").count() == 0
    forced = page.evaluate("""async (id) => {
        const csrf = document.cookie.split('; ').find(c => c.startsWith('trainyard_csrf=')).split('=')[1];
        const answer = await fetch(`/v1/runs/${id}/kill`, {method: 'POST', headers: {'X-CSRF-Token': csrf}});
        return answer.status; }""", run_id)
    assert forced == 403
    with read(live_stack) as api:
        assert api.runs.get(run_id)["status"] == "in_progress"
    screenshot(page, "run-read-only")
    assert errors == []
    page.close()


def test_live_table_and_curves_heat_map_then_kill(live_stack: LocalStack, client: TrainyardClient,
                                                  training_run: dict[str, Any], chromium: Browser) -> None:
    run_id = training_run["id"]
    # Newer runs that wait for an accelerator nobody offers: listed above it, more than the table follows.
    with read(live_stack) as api:
        for index in range(MAX_TABLE_STREAMS):
            api.runs.start({"name": f"queued-{index}", "dataset_id": training_run["spec"]["dataset_id"],
                            "architecture": "rtmdet-tiny", "accelerator": {"name": "GPU_NONE", "count": 1}})
    page = chromium.new_page(viewport=LAPTOP)
    errors = watch_errors(page)
    page.goto(live_stack.signin_link())  # the one-time link the stack prints
    row = page.locator(f"tr[data-run-id='{run_id}']")
    expect(row.locator(".status")).to_have_text("in_progress", timeout=LIVE_TIMEOUT_MS)
    # Three queued runs are listed above it; the training run has one of the table's streams all the same.
    expect(page.locator("#run-rows")).to_have_attribute("data-followed", re.compile(rf"\b{run_id}\b"))
    assert len((page.locator("#run-rows").get_attribute("data-followed") or "").split()) == MAX_TABLE_STREAMS
    # A mark on the window survives everything but a reload.
    page.evaluate("window.notReloaded = true")
    shown = number_of(page, f"tr[data-run-id='{run_id}'] progress", "value")
    page.wait_for_function("""([id, shown]) => Number(document.querySelector(
        `tr[data-run-id='${id}'] progress`).value) > shown""", arg=[run_id, shown], timeout=LIVE_TIMEOUT_MS)
    screenshot(page, "runs-live")

    row.get_by_role("link", name="live-run").click()
    expect(page.locator("#run-title")).to_have_text("Run live-run")
    curve = "#chart-loss-epoch"
    page.wait_for_function(f"Number(document.querySelector('{curve}').dataset.points) >= 1",
                           timeout=LIVE_TIMEOUT_MS)
    epochs_drawn = number_of(page, curve, "data-points")
    iterations_drawn = number_of(page, "#chart-loss-iteration", "data-points")
    page.wait_for_function(f"Number(document.querySelector('{curve}').dataset.points) > {epochs_drawn}",
                           timeout=LIVE_TIMEOUT_MS)
    # Iteration logs are stored apart from epochs, and may land after the epoch they belong to: the page
    # asks for them itself while the run trains, only those after its newest step.
    with page.expect_response(lambda answer: "/logs?kind=iteration&after_step=" in answer.url and answer.ok,
                              timeout=LIVE_TIMEOUT_MS):
        pass
    page.wait_for_function(f"Number(document.querySelector('#chart-loss-iteration').dataset.points) > "
                           f"{iterations_drawn}", timeout=LIVE_TIMEOUT_MS)
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("#run-eta")).to_contain_text("about")

    # The heat map: (classes + 1)² cells, each the count the API serves for that evaluation.
    heat = page.locator("#chart-matrix[data-epoch]")
    expect(heat).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    epoch = int(heat.get_attribute("data-epoch") or 0)
    with read(live_stack) as api:
        served = api.runs.confusion_matrix(run_id, epoch=epoch)
        dataset_classes = api.datasets.get(training_run["spec"]["dataset_id"])["classes"]
    assert served["classes"] == [*dataset_classes, "Background"]
    cells = page.evaluate("""() => echarts.getInstanceByDom(document.getElementById('chart-matrix'))
        .getOption().series[0].data""")
    assert len(cells) == (len(dataset_classes) + 1) ** 2
    assert {(x, y): v for x, y, v in cells} == {
        (predicted, truth): count for truth, counts in enumerate(served["matrix"])
        for predicted, count in enumerate(counts)}
    # The epoch slider works from the keyboard: one step back shows the evaluation before.
    slider = page.get_by_label("Evaluation")
    if int(slider.get_attribute("max") or 0) >= 1:
        slider.focus()
        page.keyboard.press("ArrowLeft")
        expect(heat).not_to_have_attribute("data-epoch", str(epoch))
    expect(page.locator("#preview-images img").first).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#checkpoint-rows tr").first).to_be_visible()
    expect(page.locator("#run-config")).to_contain_text("model")
    screenshot(page, "run-live")
    page.set_viewport_size(PHONE)
    fits_phone(page, "run-live-phone")
    page.set_viewport_size(LAPTOP)

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Kill run live-run").click()
    expect(page.locator("#run-status")).to_have_text("terminated", timeout=LIVE_TIMEOUT_MS)
    with read(live_stack) as api:
        assert api.runs.get(run_id)["status"] == "terminated"
    expect(page.get_by_role("button", name="Kill run live-run")).to_have_count(0)
    expect(page.get_by_role("button", name="Rerun run live-run")).to_be_visible()
    screenshot(page, "run-terminated")
    # Rerun from the page: it follows the new attempt live, and is killed again.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Rerun run live-run").click()
    expect(page.locator("#run-status")).to_have_text("in_progress", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#run-attempt")).to_contain_text("2 of")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Kill run live-run").click()
    expect(page.locator("#run-status")).to_have_text("terminated", timeout=LIVE_TIMEOUT_MS)
    page.get_by_role("link", name="All runs").click()
    expect(row.locator(".status")).to_have_text("terminated")
    assert errors == []
    page.close()


def test_finished_runs_weights_download_and_failure(live_stack: LocalStack, training_run: dict[str, Any],
                                                    chromium: Browser,
                                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    spec = {"architecture": "rtmdet-tiny", "batch_size": 4, "input_size": 64, "max_attempts": 1}
    with read(live_stack) as client:
        done = client.runs.start({**spec, "name": "short-run", "dataset_id": training_run["spec"]["dataset_id"],
                                  "epochs": 2})
        files = write_synthetic_coco(tmp_path_factory.mktemp("broken") / "shapes", train_images=4, val_images=2,
                                     size=64)
        broken = client.datasets.register("broken", str(files.root))
        failing = client.runs.start({**spec, "name": "broken-run", "dataset_id": broken["id"], "epochs": 1})
        # Valid when the run was accepted; gone by the time a trainer loads it (the short run trains first).
        files.val_annotations.unlink()
        assert wait_status(client, done["id"], {"success", "failed", "aborted"}, timeout=300)["status"] == "success"
        failed = wait_status(client, failing["id"], {"failed", "aborted"}, timeout=300)

    page = chromium.new_page(viewport=LAPTOP)
    errors = watch_errors(page)
    page.goto(live_stack.signin_link())
    expect(page.locator(f"tr[data-run-id='{failing['id']}'] .status")).to_have_text(failed["status"])
    screenshot(page, "runs-finished")
    page.set_viewport_size(PHONE)
    # At phone width the wide table scrolls in its own box, never the page.
    fits_phone(page, "runs-finished-phone")
    page.set_viewport_size(LAPTOP)
    page.goto(f"{live_stack.api_url}/console/runs/{done['id']}")
    expect(page.locator("#run-status")).to_have_text("success")
    weights = page.get_by_role("link", name="Download weights")
    expect(weights).to_be_visible()
    downloaded = page.evaluate("""async (href) => {
        const answer = await fetch(href); return [answer.status, (await answer.arrayBuffer()).byteLength]; }""",
                               weights.get_attribute("href"))
    assert downloaded[0] == 200 and downloaded[1] > 100_000, downloaded
    expect(page.locator("#run-eta")).to_contain_text("ended")
    assert page.get_by_role("button", name="Kill run short-run").count() == 0
    screenshot(page, "run-success")

    page.goto(f"{live_stack.api_url}/console/runs/{failing['id']}")
    expect(page.locator("#run-status")).to_have_text(failed["status"])
    expect(page.locator("#run-failure")).to_be_visible()
    assert failed["message"] and failed["message"].splitlines()[0] in page.locator("#run-message").inner_text()
    expect(page.get_by_role("button", name="Rerun run broken-run")).to_be_visible()
    screenshot(page, "run-failed")
    assert errors == []
    page.close()


def test_run_page_address_and_charting_asset(live_stack: LocalStack, training_run: dict[str, Any]) -> None:
    answer = http(live_stack, None).get(f"/console/runs/{training_run['id']}", follow_redirects=False)
    assert answer.status_code == 307 and answer.headers["location"] == f"/console/#/runs/{training_run['id']}"
    answer = http(live_stack, None).get("/console/runs/not-a-run", follow_redirects=False)
    assert answer.status_code == 404 and "path.run_id" in answer.json()["detail"]
    asset = http(live_stack, None).get("/console/vendor/echarts.min.js")
    assert asset.status_code == 200 and asset.headers["content-type"].startswith("text/javascript")
