"""Console benchmark: the runs page's first render at 100,000 runs, beside the API call it makes.

Starts NATS, the MongoDB-wire server and the API under a temporary directory
(or `--data-dir`, kept to reuse its runs), stores the runs straight into MongoDB
(`bench/seeding.py`, shared with the listing benchmark: indexes first, then
insert_many of the documents `services.api.run_creation.run_document` makes),
then, in Debian's headless Chromium signed in with a session cookie, times

- the page: from navigation start to the runs table's first page (50 rows) in
  the DOM, as the browser's own clock (`performance.now()`) reads it; the page
  loads its HTML and modules, asks `GET /v1/keys/me`, then `GET /v1/runs?limit=50`;
- the API call it makes, `GET /v1/runs?limit=50`, fetched by the same page with
  the same cookie, and by httpx with a bearer key.

Medians of `--samples`, printed as ratios page / API call, all measured in this run.

    .venv/bin/python bench/console.py [--runs 100000] [--samples 7] [--data-dir DIR]
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

from bench.seeding import SEEDED_CACHE, ensure_seeded
from trainyard.localstack import LocalStack

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PAGE_ROWS = 50


def page_first_render_ms(page: Page, url: str) -> float:
    page.goto(url, wait_until="commit")
    page.wait_for_function(f"document.querySelectorAll('#run-rows tr').length >= {PAGE_ROWS}", timeout=120_000)
    return float(page.evaluate("performance.now()"))


def browser_fetch_ms(page: Page) -> float:
    return float(page.evaluate(f"""async () => {{
        const started = performance.now();
        const answer = await fetch('/v1/runs?limit={PAGE_ROWS}', {{headers: {{Accept: 'application/json'}}}});
        const body = await answer.json();
        if (body.items.length !== {PAGE_ROWS}) throw new Error('short page');
        return performance.now() - started; }}"""))


def httpx_ms(api: httpx.Client) -> float:
    started = time.perf_counter()
    answer = api.get("/v1/runs", params={"limit": PAGE_ROWS})
    answer.raise_for_status()
    assert len(answer.json()["items"]) == PAGE_ROWS
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--data-dir", type=Path, help="keep the stack (and its seeded runs) here, to reuse them "
                                                      "next time (the listing benchmark's serve too); default: a "
                                                      "temporary directory, removed")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="trainyard-bench-console-"))
    # The listing benchmark's database and subjects: one --data-dir serves both.
    stack = LocalStack(data_dir, subject_prefix="bench", mongo_db="bench", mongo_cache_size=SEEDED_CACHE)
    try:
        stack.start_servers()
        try:
            assert stack.mongo_url
            print(ensure_seeded(stack.mongo_url, stack.mongo_db, args.runs, str(data_dir), progress=print),
                  flush=True)
            stack.start_service("api")
            key = stack.admin_key
            with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"},
                              timeout=120) as api, sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                context = browser.new_context(base_url=stack.api_url)
                signed = context.request.post("/console/session", data={"key": key})
                assert signed.ok, signed.text()
                page = context.new_page()
                url = f"{stack.api_url}/console/runs"
                page_first_render_ms(page, url)  # warm: the API's caches, Chromium's module cache
                httpx_ms(api)
                renders, fetches, direct = [], [], []
                load_before = os.getloadavg()[0]
                for _ in range(args.samples):
                    renders.append(page_first_render_ms(page, url))
                    fetches.append(browser_fetch_ms(page))
                    direct.append(httpx_ms(api))
                load_after = os.getloadavg()[0]
                browser.close()
        finally:
            stack.stop()
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    render, fetch, call = (statistics.median(s) for s in (renders, fetches, direct))
    print(f"runs in the project                          {args.runs:>9,}")
    print(f"runs page, first render ({PAGE_ROWS} rows)             {render:8.1f} ms  (median of {args.samples})")
    print(f"GET /v1/runs?limit={PAGE_ROWS} from the page (fetch)     {fetch:8.1f} ms")
    print(f"GET /v1/runs?limit={PAGE_ROWS} from httpx                {call:8.1f} ms")
    print(f"ratio first render / the page's API call      {render / fetch:8.2f}x")
    print(f"ratio first render / httpx call               {render / call:8.2f}x")
    print(f"load average {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
