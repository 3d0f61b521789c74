"""The console's list pages stay live in a real headless Chromium against the real local stack: a
trainer (bench.loadgen's simulated one, speaking the trainer protocol) comes online, runs a sweep's
trials and is killed; the sweeps list, a sweep's page and a comparison of its two trials follow the
trials to the end; a dataset
registered through the API appears. No page is reloaded (a mark on each window would not survive),
and the keyboard focus stays where it was through a redraw."""

import re
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from shared.apikeys import Scope, parse_key
from tests.browser.conftest import PHONE, screenshot
from tests.browser.test_console_pages import fits_width, page_errors, register, signed_in
from tests.e2e.conftest import FAST_LOSS_DETECTION
from tests.helpers import create_key, http
from trainyard.localstack import LocalStack

# The machine is shared and busy: a change may take more than the default 5 s to show.
expect.set_options(timeout=30_000)


def opened(browser: Browser, stack: LocalStack, path: str, **kwargs: object) -> Page:
    page = signed_in(browser, stack, stack.admin_key, **kwargs)  # type: ignore[arg-type]
    page.goto(f"{stack.api_url}/console/{path}")
    return page


def mark(page: Page) -> None:
    page.evaluate("window.notReloaded = true")


def not_reloaded(page: Page) -> bool:
    return bool(page.evaluate("window.notReloaded === true"))


def test_trainers_sweeps_and_datasets_pages_follow_changes_without_a_reload(stack: LocalStack, tmp_path: Path,
                                                                             chromium: Browser) -> None:
    browser = chromium
    page_errors.clear()  # signed_in() collects every page's uncaught script errors there
    stack.start_servers()
    stack.start_service("scheduler", **FAST_LOSS_DETECTION)
    stack.start_service("api", **FAST_LOSS_DETECTION)
    admin = http(stack, stack.admin_key)
    dataset = register(admin, tmp_path, "shapes", train_images=2, val_images=1)

    trainers = opened(browser, stack, "trainers")
    expect(trainers.get_by_text("No trainer has sent a heartbeat yet.")).to_be_visible()
    sweeps = opened(browser, stack, "sweeps")
    expect(sweeps.get_by_text("No sweep yet")).to_be_visible()
    datasets = opened(browser, stack, "datasets")
    expect(datasets.locator(f"tr[data-dataset-id='{dataset['id']}']")).to_contain_text("shapes")
    pages = [trainers, sweeps, datasets]
    for page in pages:
        mark(page)

    # A trainer comes online.
    trainer = stack.start_load_generator("console", "--trainers", "1", "--behaviour", "complete",
                                         "--run-seconds", "6", "--heartbeat-seconds", "0.5")
    row = trainers.locator("tr[data-trainer-id='console-0']")
    expect(row.locator("td").nth(2)).to_have_text("online")
    expect(row.locator("td").nth(8)).to_have_text("idle")
    expect(trainers.locator("#trainer-counts")).to_have_text("1 online, 0 silent, 0 lost, 0 draining.")

    # A sweep of two trials, one at a time: the list shows it, its page follows the trials.
    answer = admin.post("/v1/sweeps", json={
        "name": "live-sweep", "base": {"architecture": "rtmdet-tiny", "epochs": 1, "dataset_id": dataset["id"]},
        "searcher": {"name": "grid"}, "metric": "bbox_mAP", "trials": 2, "max_concurrent": 1,
        "space": {"learning_rate": {"type": "choice", "values": [0.001, 0.002]}}})
    assert answer.status_code == 201, answer.text
    sweep = answer.json()
    expect(sweeps.locator(f"tr[data-sweep-id='{sweep['id']}'] td").nth(1)).to_have_text("running")
    sweep_page = opened(browser, stack, f"sweeps/{sweep['id']}")
    pages.append(sweep_page)
    mark(sweep_page)
    trials = [trial["run_id"] for trial in sweep["trials"]]
    # Compare, opened while the two trials wait: it follows their streams and shows them end.
    compare = opened(browser, stack, f"compare?ids={','.join(trials)}")
    pages.append(compare)
    mark(compare)
    expect(compare.get_by_role("table", name="Final and best metrics")).to_be_visible()
    # What the trainer runs now, on its row: one trial (the queue may place either first), then the other.
    running = re.compile("|".join(f"{run_id[:8]} in_progress" for run_id in trials))
    expect(row.locator("td").nth(8)).to_contain_text(running)
    first = next(run_id for run_id in trials if run_id[:8] in row.locator("td").nth(8).inner_text())
    second = next(run_id for run_id in trials if run_id != first)
    expect(sweep_page.locator(f"tr[data-run-id='{first}'] td").nth(1)).to_have_text("in_progress")
    expect(sweep_page.locator(f"tr[data-run-id='{first}'] td").nth(1)).to_have_text("success")
    expect(row.locator("td").nth(8)).to_contain_text(f"{second[:8]} in_progress")
    screenshot(trainers, "live-trainers-running")
    expect(sweep_page.locator(f"tr[data-run-id='{second}'] td").nth(1)).to_have_text("success")
    expect(sweep_page.locator("#sweep-status")).not_to_contain_text("running")
    expect(sweeps.locator(f"tr[data-sweep-id='{sweep['id']}'] td").nth(1)).not_to_have_text("running")
    final = admin.get(f"/v1/sweeps/{sweep['id']}").json()["status"]
    expect(sweep_page.locator("#sweep-status")).to_contain_text(f"Status: {final}.")
    expect(row.locator("td").nth(8)).to_have_text("idle")
    screenshot(sweep_page, "live-sweep-ended")
    for run_id in trials:
        expect(compare.locator(f"tr[data-run-id='{run_id}'] td").nth(1)).to_have_text("success")
    expect(compare.locator("[data-followed]")).to_have_attribute("data-followed", "")  # no stream left open
    # Its metrics table is wider than the window: its box is a Tab stop, so the keyboard can scroll it.
    wide = compare.get_by_role("region", name="Final and best metrics (scrolls sideways)")
    expect(wide).to_have_attribute("tabindex", "0")
    wide.focus()
    compare.keyboard.press("ArrowRight")
    compare.wait_for_function("document.activeElement.scrollLeft > 0")  # the browser may scroll smoothly
    screenshot(compare, "live-compare-ended")

    # A dataset registered elsewhere appears; the link the keyboard was on keeps the focus.
    link = datasets.get_by_role("link", name="shapes", exact=True)
    link.focus()
    second_dataset = register(admin, tmp_path, "second", train_images=2, val_images=1)
    expect(datasets.locator(f"tr[data-dataset-id='{second_dataset['id']}']")).to_contain_text("second")
    expect(link).to_be_focused()
    screenshot(datasets, "live-datasets")

    # Killed (SIGKILL: no goodbye): silent, then presumed lost.
    trainer.kill()
    trainer.wait()
    expect(row.locator("td").nth(2)).to_have_text("lost")
    expect(trainers.locator("#trainer-counts")).to_have_text("0 online, 0 silent, 1 lost, 0 draining.")
    screenshot(trainers, "live-trainers-lost")
    assert all(not_reloaded(page) for page in pages)

    phone = opened(browser, stack, "trainers", viewport=PHONE)
    expect(phone.locator("tr[data-trainer-id='console-0'] td").nth(2)).to_have_text("lost")
    assert fits_width(phone)
    screenshot(phone, "live-trainers-phone")
    assert page_errors == []


def test_keyboard_first_stop_skips_to_the_page_and_phone_tables_read_as_cards(stack: LocalStack, tmp_path: Path,
                                                                              chromium: Browser) -> None:
    page_errors.clear()
    stack.start_servers()
    stack.start_service("api")
    admin = http(stack, stack.admin_key)
    dataset = register(admin, tmp_path, "shapes", train_images=2, val_images=1)
    run = admin.post("/v1/runs", json={"name": "queued", "dataset_id": dataset["id"], "architecture": "rtmdet-tiny",
                                       "epochs": 1}).json()

    signin = chromium.new_page(viewport=PHONE)
    signin.goto(f"{stack.api_url}/console/")
    expect(signin.get_by_role("form", name="Sign in")).to_contain_text("trainyard ui")
    screenshot(signin, "sign-in-phone")

    phone = signed_in(chromium, stack, stack.admin_key, PHONE)
    expect(phone.get_by_role("link", name="Runs")).to_have_attribute("aria-current", "page")
    expect(phone.locator("main")).to_be_focused()  # signed in, the keyboard continues in the page
    # On a page's load the first Tab stop is the skip link; following it puts the keyboard in the page.
    phone.reload()
    expect(phone.locator(f"tr[data-run-id='{run['id']}']")).to_be_visible()
    phone.keyboard.press("Tab")
    skip = phone.get_by_role("link", name="Skip to the page's content")
    expect(skip).to_be_focused()
    phone.keyboard.press("Enter")
    expect(phone.locator("main")).to_be_focused()

    # At 390 px a run is a card: every cell under its column's name, nothing wider than the window.
    cells = phone.locator(f"tr[data-run-id='{run['id']}'] td")
    expect(cells.nth(3)).to_have_text(run["status"])
    expect(cells.nth(3)).to_have_attribute("data-label", "Status")
    assert phone.get_by_role("table", name="Runs").locator(f"tr[data-run-id='{run['id']}']").count() == 1
    box = phone.locator(f"tr[data-run-id='{run['id']}']").bounding_box()
    assert box is not None and box["width"] <= PHONE["width"]
    assert fits_width(phone)
    screenshot(phone, "runs-phone-cards")

    phone.goto(f"{stack.api_url}/console/datasets")
    row = phone.get_by_role("table", name="Registered datasets").locator(f"tr[data-dataset-id='{dataset['id']}']")
    expect(row.locator("td").nth(2)).to_have_attribute("data-label", "Classes")
    assert fits_width(phone)

    # A live page whose key is revoked says it is no longer live (its stream ends with `revoked`).
    key = create_key(stack, "default", [Scope.TRAINERS_READ, Scope.RUNS_READ], name="revoked-later")
    watcher = signed_in(chromium, stack, key)
    watcher.goto(f"{stack.api_url}/console/trainers")
    expect(watcher.get_by_text("No trainer has sent a heartbeat yet.")).to_be_visible()
    parsed = parse_key(key)
    assert parsed is not None
    assert admin.delete(f"/v1/keys/{parsed[0]}").status_code in (200, 204)
    expect(watcher.get_by_role("alert")).to_contain_text("Live updates stopped")
    assert page_errors == []
