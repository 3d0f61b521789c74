"""`runs start`: a run spec from a YAML or JSON file (the API's RunSpec schema), flags over it."""

import json
from pathlib import Path
from typing import Any

import yaml

from trainyard_client.cli.common import CliError


def read_spec_file(path: Path) -> dict[str, Any]:
    """The file's mapping: JSON when it parses as JSON, else YAML (a superset for these files)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise CliError(f"spec file {path}: {error.strerror or error}") from error
    try:
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise CliError(f"spec file {path} is neither valid JSON nor YAML: {error}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise CliError(f"spec file {path}: expected a mapping of RunSpec fields, got {type(loaded).__name__}")
    return loaded


def merged_spec(from_file: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """The file's fields with every flag that was given over them; nested ones (`accelerator`,
    `checkpoint`, `limit`) merge key by key, so `--accelerator-count 2` keeps the file's name."""
    spec = dict(from_file)
    for name, value in flags.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(spec.get(name), dict):
            spec[name] = {**spec[name], **{k: v for k, v in value.items() if v is not None}}
        elif isinstance(value, dict):
            given = {k: v for k, v in value.items() if v is not None}
            if given:
                spec[name] = given
        else:
            spec[name] = value
    return spec
