"""What every command shares, declared once: the connection options, the JSON-or-table
ending, the API's problems as a message and exit code, ids by prefix, and formatting."""

import contextlib
import functools
import inspect
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trainyard_client import TrainyardClient, TrainyardError
from trainyard_client.calls import DEFAULT_DATA_DIR

# soft_wrap: a line per epoch even when the output is a pipe or a CI log.
console = Console(soft_wrap=True)
WIDTH = 80
SHORT_ID = 8
# The API finds runs by the first 4 or more digits of their id (services/api/search.py).
MIN_RUN_PREFIX = 4

DataDir = Annotated[Path, typer.Option(help="the local stack's data dir: its API URL and admin key are read "
                                            "from it", envvar="TRAINYARD_DATA_DIR")]
ApiUrl = Annotated[str | None, typer.Option(help="API base URL (default: TRAINYARD_API_URL, else the local stack's)",
                                            show_default=False)]
ApiKey = Annotated[str | None, typer.Option(help="API key (default: TRAINYARD_API_KEY, else the local stack's)",
                                            show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON for scripts instead of tables")]
Wide = Annotated[bool, typer.Option("--wide", help="full ids and every column, wider than 80 columns")]

Result = TypeVar("Result")

# C0 controls but newline and tab, DEL, C1 controls, and the invisible marks that reorder or hide
# text (bidirectional overrides and isolates, zero-width characters).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def shown(value: object) -> str:
    """Text from the server as it may reach a terminal: every control character escaped (ESC shows
    as \\x1b, NUL as \\x00), and rich markup in it shown, not applied. Tables (ServerTable) and
    errors put server text through here."""
    text = _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                            else f"\\u{ord(m.group()):04x}", str(value))
    return escape(text)


class ServerTable(Table):
    """A rich Table whose headers, title and cells are server text, shown through `shown`."""

    def __init__(self, *headers: Any, **options: Any) -> None:
        if isinstance(options.get("title"), str):
            options["title"] = shown(options["title"])
        super().__init__(*(shown(h) if isinstance(h, str) else h for h in headers), **options)

    def add_column(self, header: Any = "", *args: Any, **options: Any) -> None:
        super().add_column(shown(header) if isinstance(header, str) else header, *args, **options)

    def add_row(self, *cells: Any, **options: Any) -> None:
        super().add_row(*(shown(c) if isinstance(c, str) else c for c in cells), **options)


class CliError(Exception):
    """A problem the CLI itself finds (an ambiguous id, a bad spec file): printed, then exit `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Print the API's problem (status, detail, each bad field) and exit 1 instead of a traceback."""
    try:
        yield
    except TrainyardError as error:
        where = f"error {error.status}" if error.status else "error"
        console.print(f"[red]{where}:[/red] {shown(error.detail)}", highlight=False)
        for item in error.errors[:20]:
            console.print("  - " + shown(", ".join(f"{k}={v}" for k, v in item.items())), highlight=False)
        raise typer.Exit(1) from error
    except CliError as error:
        console.print(f"[red]error:[/red] {shown(error)}", highlight=False)
        raise typer.Exit(error.code) from error


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


_CONNECTION = [
    inspect.Parameter("api_url", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ApiUrl),
    inspect.Parameter("api_key", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ApiKey),
    inspect.Parameter("data_dir", inspect.Parameter.KEYWORD_ONLY, default=Path(DEFAULT_DATA_DIR), annotation=DataDir),
]
_JSON = inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=AsJson)


def api_command(group: typer.Typer, name: str, show: Callable[[Any], None] | None = None,
                ) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """A command whose first parameter is the client: it gains `--api-url`, `--api-key`, `--data-dir`
    (and `--json` when it has a `show` for people), and its result is printed as JSON or by `show`."""

    def decorate(command: Callable[..., Result]) -> Callable[..., Result]:
        own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]

        @functools.wraps(command)
        def run(**options: Any) -> None:
            connection = {name: options.pop(name) for name in ("api_url", "api_key", "data_dir")}
            as_json = options.pop("as_json", show is None)
            with reported_errors(), TrainyardClient(connection["api_url"], connection["api_key"],
                                                    data_dir=connection["data_dir"]) as client:
                result = command(client, **options)
            if result is None:
                return
            if as_json or show is None:
                print_json(result)
            else:
                show(result)

        parameters = own + _CONNECTION + ([_JSON] if show is not None else [])
        run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        del run.__wrapped__
        group.command(name)(run)
        return command

    return decorate


# -- ids by prefix ------------------------------------------------------------------------


def pick_id(kind: str, given: str, candidates: Iterable[tuple[str, str]]) -> str:
    """The one id among (id, label) candidates that starts with `given`; else a CliError listing them."""
    given = given.strip().lower()
    matches = [(ident, label) for ident, label in candidates if ident.startswith(given)]
    if len(matches) == 1:
        return matches[0][0]
    if not matches:
        raise CliError(f"no {kind} id starts with {given!r}", 1)
    listed = "\n".join(f"  {ident}  {label}" for ident, label in matches[:20])
    raise CliError(f"{kind} id {given!r} is ambiguous; {len(matches)} start with it:\n{listed}")


def is_full_id(given: str) -> bool:
    return len(given) == 32 and all(c in "0123456789abcdef" for c in given)


def run_id(client: TrainyardClient, given: str) -> str:
    """A run's full id from its full id or any unambiguous start of it."""
    if is_full_id(given):
        return given
    if len(given) < MIN_RUN_PREFIX:
        raise CliError(f"run id {given!r}: give at least {MIN_RUN_PREFIX} of its digits (the API searches ids "
                       "from 4)")
    runs = client.runs.list(search=given, limit=100)["items"]
    return pick_id("run", given, ((r["id"], f"{r['name']} ({r['status']})") for r in runs))


def dataset_id(client: TrainyardClient, given: str) -> str:
    if is_full_id(given):
        return given
    found: list[tuple[str, str]] = []
    cursor: str | None = None
    while True:
        page = client.datasets.list(limit=200, cursor=cursor)
        found += [(d["id"], d["name"]) for d in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            return pick_id("dataset", given, found)


def model_id(client: TrainyardClient, given: str) -> str:
    if is_full_id(given):
        return given
    models = client.models.list(limit=500)["items"]
    return pick_id("model", given, ((m["id"], f"{m['architecture']} from run {m['run']['id']}") for m in models))


def key_id(client: TrainyardClient, given: str) -> str:
    if is_full_id(given):
        return given
    return pick_id("key", given, ((k["id"], k["name"]) for k in client.keys.list()))


# -- formatting ---------------------------------------------------------------------------


def short(ident: str | None, wide: bool = False) -> str:
    """An id as tables show it: its first 8 digits (which every command accepts), or whole."""
    if not ident:
        return "-"
    return ident if wide else ident[:SHORT_ID]


def when(iso: str | None) -> str:
    return iso[:19].replace("T", " ") if iso else "-"


def metric(values: dict[str, float | None], name: str) -> str:
    """A metric for a table: "-" when not reported or undefined (null) in that evaluation."""
    value = values.get(name)
    return f"{value:.3f}" if value is not None else "-"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def table(*columns: str, title: str | None = None) -> ServerTable:
    """A table of server text whose first column (an id, an epoch) never wraps; the others fold."""
    made = ServerTable(title=title)
    for i, column in enumerate(columns):
        made.add_column(column, no_wrap=i == 0, overflow="fold")
    return made


def show_table(made: Table, wide: bool = False) -> None:
    """Print within 80 columns, or (wide) within the terminal's width, however wide it is."""
    console.print(made, highlight=False, width=None if wide else min(WIDTH, console.width))
