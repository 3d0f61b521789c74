"""Console benchmark: the runs page's first render at 100,000 runs, beside the API call it makes.

Starts NATS, the MongoDB-wire server and the API under a temporary directory,
inserts the runs straight into MongoDB with insert_many (in the shape the API
stores: `services.api.run_creation.run_document`), then, in Debian's headless
Chromium signed in with a session cookie, times

- the page: from navigation start to the runs table's first page (50 rows) in
  the DOM, as the browser's own clock (`performance.now()`) reads it; the page
  loads its HTML and modules, asks `GET /v1/keys/me`, then `GET /v1/runs?limit=50`;
- the API call it makes, `GET /v1/runs?limit=50`, fetched by the same page with
  the same cookie, and by httpx with a bearer key.

Medians of `--samples`, printed as ratios page / API call, all measured in this run.

    .venv/bin/python bench/console.py [--runs 100000] [--samples 7]
"""

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright
from pymongo import AsyncMongoClient, MongoClient

from services.api.run_creation import run_document
from services.api.search import search_keys
from services.api.store import ApiStore
from shared.specs import DatasetLayout, DatasetSplit, RunSpec
from trainyard.localstack import LocalStack

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
STATUSES = ["success"] * 80 + ["failed"] * 10 + ["terminated"] * 5 + ["pending"] * 3 + ["in_progress"] * 2
PAGE_ROWS = 50
BATCH = 5000


def insert_runs(stack: LocalStack, count: int) -> None:
    """`count` runs of the default project spread over 30 days, as POST /v1/runs stores them."""
    rng = random.Random(0)
    layout = DatasetLayout(root="/data/shapes", train=DatasetSplit(annotations="/data/shapes/a/train.json",
                                                                   images="/data/shapes/images/train"),
                           val=DatasetSplit(annotations="/data/shapes/a/val.json", images="/data/shapes/images/val"),
                           classes=["square", "circle", "triangle"])
    spec = RunSpec(name="template", dataset_id="d" * 32, architecture="rtmdet-tiny", epochs=12)
    template = run_document("default", spec, {"layout": layout.model_dump()}, None, "bench")
    now = datetime.now(UTC)
    assert stack.mongo_url
    client: MongoClient[dict[str, Any]] = MongoClient(stack.mongo_url)
    with client:
        runs = client[stack.mongo_db]["runs"]
        batch: list[dict[str, Any]] = []
        first = now
        for i in range(count):
            created = now - timedelta(seconds=rng.random() * 30 * 86400)
            first = min(first, created)
            run_id, name = f"{rng.getrandbits(128):032x}", f"run-{i} lr{rng.random():.3f}"
            batch.append(template | {
                "_id": run_id, "name": name, "spec": template["spec"] | {"name": name},
                "search_keys": search_keys(name, run_id), "status": rng.choice(STATUSES), "attempt": 1,
                "created_at": created, "updated_at": created,
                "history": [{"status": "created", "at": created, "message": None, "attempt": None}]})
            if len(batch) == BATCH:
                runs.insert_many(batch)
                batch = []
                if (i + 1) % 20_000 == 0:
                    print(f"inserted {i + 1:,} runs", flush=True)
        if batch:
            runs.insert_many(batch)
        # What the API records beside the runs it inserts itself.
        client[stack.mongo_db]["projects"].update_one({"_id": "default"}, {"$min": {"first_run_at": first}},
                                                      upsert=True)


async def build_indexes(stack: LocalStack) -> None:
    assert stack.mongo_url
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_url)
    try:
        await ApiStore(client[stack.mongo_db]).ensure_indexes()
    finally:
        await client.close()


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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trainyard-bench-console-") as tmp:
        stack = LocalStack(Path(tmp))
        stack.start_servers()
        try:
            insert_runs(stack, args.runs)
            asyncio.run(build_indexes(stack))
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
                for _ in range(args.samples):
                    renders.append(page_first_render_ms(page, url))
                    fetches.append(browser_fetch_ms(page))
                    direct.append(httpx_ms(api))
                browser.close()
        finally:
            stack.stop()
    render, fetch, call = (statistics.median(s) for s in (renders, fetches, direct))
    print(f"runs in the project                          {args.runs:>9,}")
    print(f"runs page, first render ({PAGE_ROWS} rows)             {render:8.1f} ms  (median of {args.samples})")
    print(f"GET /v1/runs?limit={PAGE_ROWS} from the page (fetch)     {fetch:8.1f} ms")
    print(f"GET /v1/runs?limit={PAGE_ROWS} from httpx                {call:8.1f} ms")
    print(f"ratio first render / the page's API call      {render / fetch:8.2f}x")
    print(f"ratio first render / httpx call               {render / call:8.2f}x")


if __name__ == "__main__":
    main()
