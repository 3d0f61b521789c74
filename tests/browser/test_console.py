"""The console in a real headless Chromium (Debian's package) against the gateway as a process:
sign in, see the runs table with status as text, and a read-only key offered no write and refused one."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

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
