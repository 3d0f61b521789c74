// Live updates from the API's server-sent events (GET /v1/runs/{id}/events), for the run page and the
// runs table. EventSource sends the session cookie and, when a connection drops, reconnects with
// Last-Event-ID, so the stream resumes exactly where it was.
const ENDED = ["success", "failed", "aborted", "terminated"];
// A browser keeps at most 6 HTTP/1.1 connections to one origin; the table must leave room for fetches.
export const MAX_TABLE_STREAMS = 3;
const UNWATCHED_REFRESH_S = 10;
// The scheduler applies a rerun a moment after the API accepts it (longer while it restarts): until
// then the run still reads ended, and no stream follows an ended row.
const RERUN_WAIT_MS = 120_000;

export const isEnded = (status) => ENDED.includes(status);

/**
 * Follow one run: `onEvent(kind, data)` for each `status`, `epoch` and `end` event; `lastEventId`
 * (optional) resumes after that event instead of replaying the history. Returns a function that closes it.
 */
export function followRun(runId, onEvent, lastEventId) {
  const query = lastEventId ? `?last_event_id=${encodeURIComponent(lastEventId)}` : "";
  const source = new EventSource(`/v1/runs/${runId}/events${query}`);
  const close = () => source.close();
  for (const kind of ["status", "epoch"]) {
    source.addEventListener(kind, (event) => onEvent(kind, JSON.parse(event.data)));
  }
  // After `end` the server closes the stream; without close() EventSource would reconnect.
  source.addEventListener("end", (event) => { close(); onEvent("end", JSON.parse(event.data)); });
  source.addEventListener("revoked", (event) => { close(); onEvent("revoked", JSON.parse(event.data)); });
  return close;
}

/** `action` at most once per `wait_ms`, after the last call: a burst of events makes one refresh. */
export function debounced(action, wait_ms = 250) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(action, wait_ms);
  };
}

/**
 * The runs table, live: each run not yet ended that is in the table gets a stream (at most
 * MAX_TABLE_STREAMS at a time, the others wait their turn); on its events the run is fetched again and
 * its row replaced by `renderRow(run)`. Durations of training runs tick every second in between.
 */
export class LiveTable {
  constructor(tbody, { api, renderRow, duration }) {
    Object.assign(this, { tbody, api, renderRow, duration });
    this.streams = new Map();
    this.ticker = null;
    this.reruns = new Map();  // run id -> until when its ended row is read again each second
  }

  /** A rerun was accepted: read the run again each second until it no longer reads ended, when a
   *  stream takes it on (watch), or until RERUN_WAIT_MS have passed. */
  awaitRerun(runId) {
    this.reruns.set(runId, Date.now() + RERUN_WAIT_MS);
    if (!this.ticker) this.ticker = setInterval(() => this.tick(), 1000);
  }

  watch() {
    if (!this.ticker) this.ticker = setInterval(() => this.tick(), 1000);
    const rows = [...this.tbody.querySelectorAll("tr[data-run-id]")];
    const training = (tr) => tr.dataset.status === "in_progress";
    // Training runs first: their progress moves; a queued run may wait for hours.
    const waiting = rows.filter((tr) => !isEnded(tr.dataset.status) && !this.streams.has(tr.dataset.runId))
      .sort((a, b) => Number(training(b)) - Number(training(a)));
    for (const tr of waiting) {
      if (this.streams.size >= MAX_TABLE_STREAMS && training(tr)) {
        const queued = rows.find((row) => this.streams.has(row.dataset.runId) && !training(row));
        if (queued) this.forget(queued.dataset.runId);
      }
      if (this.streams.size >= MAX_TABLE_STREAMS) break;
      const runId = tr.dataset.runId;
      const refresh = debounced(() => this.refresh(runId));
      this.streams.set(runId, followRun(runId, (kind) => {
        if (kind === "end" || kind === "revoked") { this.forget(runId); this.watch(); }
        refresh();
      }));
    }
    this.showFollowed();
  }

  /** Which runs have a stream now, on the table body (for tests and scripts). */
  showFollowed() {
    this.tbody.dataset.followed = [...this.streams.keys()].join(" ");
  }

  async refresh(runId) {
    const old = this.tbody.querySelector(`tr[data-run-id='${runId}']`);
    if (!old || !this.ticker) { this.forget(runId); return; }
    let run;
    try { run = await this.api("GET", `/v1/runs/${runId}`); } catch { return; }
    const fresh = this.renderRow(run);
    // Keep the keyboard where it was: the same control in the new row gets the focus back.
    const focused = old.contains(document.activeElement) ? document.activeElement.getAttribute("aria-label") : null;
    old.replaceWith(fresh);
    if (focused) fresh.querySelector(`[aria-label='${CSS.escape(focused)}']`)?.focus();
    if (isEnded(run.status)) { this.forget(runId); this.watch(); }
    // A run read again without a stream may have started training: it takes a stream now, not at the
    // next tick (watch() in tick() runs before these reads come back).
    else if (!this.streams.has(runId)) this.watch();
  }

  tick() {
    for (const [runId, until] of this.reruns) {
      const tr = this.tbody.querySelector(`tr[data-run-id='${runId}']`);
      if (!tr || !isEnded(tr.dataset.status) || Date.now() > until) this.reruns.delete(runId);
      else this.refresh(runId);
    }
    // Rows beyond the streams' cap are read again now and then, so they move too (slower).
    this.ticks = (this.ticks || 0) + 1;
    if (this.ticks % UNWATCHED_REFRESH_S === 0) {
      for (const tr of this.tbody.querySelectorAll("tr[data-run-id]")) {
        if (!isEnded(tr.dataset.status) && !this.streams.has(tr.dataset.runId)) this.refresh(tr.dataset.runId);
      }
      this.watch();
    }
    for (const cell of this.tbody.querySelectorAll("tr[data-status='in_progress'] td.duration")) {
      const base = Number(cell.dataset.seconds || 0);
      const since = (Date.now() - Number(cell.dataset.fetchedAt)) / 1000;
      cell.textContent = this.duration(base + since);
    }
  }

  forget(runId) {
    this.streams.get(runId)?.();
    this.streams.delete(runId);
    this.showFollowed();
  }

  stop() {
    for (const runId of [...this.streams.keys()]) this.forget(runId);
    clearInterval(this.ticker);
    this.ticker = null;
  }
}

/**
 * Follow one of the API's live lists (GET /v1/trainers/events, /v1/models/events, /v1/sweeps/{id}/events,
 * ...): `onChange(body)` gets the whole of what the matching GET answers, each time it differs from
 * what the page shows (`shown`, what it drew from its own GET: the stream's first event is usually the
 * same). The event id is a digest of that state, so when EventSource reconnects (with Last-Event-ID)
 * nothing comes until the state changes. `end` (it will not change), `gone` (removed) and `revoked`
 * close it: EventSource would otherwise reconnect. `onClosed(why)` hears of those and of `failed` (an
 * answer that was not a stream, which EventSource does not retry). Returns a function that closes it.
 */
export function followList(path, kind, shown, onChange, onClosed = () => {}) {
  let drawn = JSON.stringify(shown);
  const source = new EventSource(path);
  source.addEventListener(kind, (event) => {
    const body = JSON.parse(event.data);
    const text = JSON.stringify(body);
    if (text !== drawn) { drawn = text; onChange(body); }
  });
  for (const last of ["end", "gone", "revoked"]) {
    source.addEventListener(last, () => { source.close(); onClosed(last); });
  }
  // EventSource reconnects by itself after a dropped connection, but gives up on an answer that is not
  // a stream (a 401 once the session has ended): the page must say it is no longer live.
  source.addEventListener("error", () => { if (source.readyState === EventSource.CLOSED) onClosed("failed"); });
  return () => source.close();
}
