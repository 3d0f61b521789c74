"""The console in a real headless Chromium (Debian's package) against the gateway as a process:
sign in, see the runs table with status as text, and a read-only key offered no write and refused one."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, expect, sync_playwright

from shared.apikeys import Scope
from tests.helpers import create_key, http
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} missing (scripts/setup.sh)")


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_sign_in_runs_table_and_read_only_key(stack: LocalStack, tmp_path: Path,
                                              browser: Browser) -> None:
    stack.start_servers()
    stack.start_service("api")
    admin = http(stack, stack.admin_key)
    files = write_synthetic_coco(tmp_path / "shapes", train_images=4, val_images=2, size=64)
    dataset = admin.post("/v1/datasets", json={"name": "shapes", "path": str(files.root)}).json()["id"]
    run = admin.post("/v1/runs", json={"name": "console-run", "dataset_id": dataset,
                                       "architecture": "rtmdet-tiny", "epochs": 1}).json()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    page = browser.new_page()
    page.goto(f"{stack.api_url}/")
    page.get_by_label("API key").fill(stack.admin_key)
    page.get_by_role("button", name="Sign in").click()
    row = page.locator(f"tr[data-run-id='{run['id']}']")
    expect(row).to_contain_text("console-run")
    expect(row.locator(".status")).to_have_text(run["status"])
    expect(page.get_by_role("button", name="Kill run console-run")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "runs-admin.png"), full_page=True)

    reader = browser.new_page()
    reader.goto(f"{stack.api_url}/console/")
    reader.get_by_label("API key").fill(create_key(stack, "default", [Scope.RUNS_READ], name="reader"))
    reader.get_by_role("button", name="Sign in").click()
    expect(reader.locator(f"tr[data-run-id='{run['id']}']")).to_contain_text("console-run")
    assert reader.get_by_role("button", name="Kill run console-run").count() == 0
    forced = reader.evaluate("""async (id) => {
        const csrf = document.cookie.split('; ').find(c => c.startsWith('trainyard_csrf=')).split('=')[1];
        const answer = await fetch(`/v1/runs/${id}/kill`, {method: 'POST', headers: {'X-CSRF-Token': csrf}});
        return answer.status; }""", run["id"])
    assert forced == 403
    reader.screenshot(path=str(SCREENSHOTS / "runs-read-only.png"), full_page=True)


def test_table_kill_rerun_and_remove_each_asked_first(stack: LocalStack, tmp_path: Path, browser: Browser) -> None:
    # No trainer: the scheduler queues the run, so a kill ends it at once and a rerun queues it again.
    stack.start_servers()
    stack.start_service("scheduler")
    stack.start_service("api")
    admin = http(stack, stack.admin_key)
    files = write_synthetic_coco(tmp_path / "shapes", train_images=4, val_images=2, size=64)
    dataset = admin.post("/v1/datasets", json={"name": "shapes", "path": str(files.root)}).json()["id"]
    older = admin.post("/v1/runs", json={"name": "older", "dataset_id": dataset, "architecture": "rtmdet-tiny",
                                         "epochs": 1}).json()
    run = admin.post("/v1/runs", json={"name": "steered", "dataset_id": dataset, "architecture": "rtmdet-tiny",
                                       "epochs": 1}).json()
    page = browser.new_page()
    asked: list[str] = []

    def answer_yes(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer_yes)
    page.goto(f"{stack.api_url}/console/")
    page.get_by_label("API key").fill(stack.admin_key)
    page.get_by_role("button", name="Sign in").click()
    rows = page.locator("#run-rows tr")
    expect(rows.first).to_have_attribute("data-run-id", run["id"])  # newest first
    page.get_by_label("Sort").select_option("created_at")
    expect(rows.first).to_have_attribute("data-run-id", older["id"])

    row = page.locator(f"tr[data-run-id='{run['id']}']")
    page.get_by_role("button", name="Kill run steered").click()
    expect(row.locator(".status")).to_have_text("terminated", timeout=30_000)
    assert page.get_by_role("button", name="Kill run steered").count() == 0
    # The scheduler applies a rerun after the API has accepted it, here only once it is back: the row,
    # ended when the table read it again, shows the rerun all the same.
    stack.stop_process("scheduler")
    with page.expect_response(lambda answer: "/v1/runs?" in answer.url):  # the table, read again
        page.get_by_role("button", name="Rerun run steered").click()
    expect(row.locator(".status")).to_have_text("terminated")
    stack.start_service("scheduler")
    expect(row.locator(".status")).to_have_text("pending", timeout=60_000)
    page.get_by_role("button", name="Kill run steered").click()
    expect(row.locator(".status")).to_have_text("terminated", timeout=30_000)
    page.screenshot(path=str(SCREENSHOTS / "runs-actions.png"), full_page=True)
    page.get_by_role("button", name="Remove run steered").click()
    expect(row).to_have_count(0)
    assert admin.get(f"/v1/runs/{run['id']}").status_code == 404
    assert asked == ["Kill run steered?", "Rerun run steered?", "Kill run steered?",
                     "Remove run steered? Its epochs, checkpoints and previews are deleted; a model it produced "
                     "stays."]
