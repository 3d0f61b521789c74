"""A typed Python client of the trainyard HTTP API."""

from __future__ import annotations

import builtins
from typing import Any, cast

import httpx


class TrainyardError(Exception):
    """The API answered with a problem: its status, detail and per-field errors."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.errors = errors or []


class _Resource:
    def __init__(self, client: TrainyardClient) -> None:
        self._client = client


class Datasets(_Resource):
    def register(self, name: str, path: str, **layout: str) -> dict[str, Any]:
        return self._client.json("POST", "/v1/datasets", json={"name": name, "path": path, **layout})

    def get(self, dataset_id: str) -> dict[str, Any]:
        return self._client.json("GET", f"/v1/datasets/{dataset_id}")

    def list(self) -> builtins.list[dict[str, Any]]:
        return cast(builtins.list[dict[str, Any]], self._client.request("GET", "/v1/datasets"))


class Runs(_Resource):
    def start(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._client.json("POST", "/v1/runs", json=spec)

    def get(self, run_id: str) -> dict[str, Any]:
        return self._client.json("GET", f"/v1/runs/{run_id}")

    def list(self, status: str | None = None, limit: int = 50) -> builtins.list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
        return cast(builtins.list[dict[str, Any]], self._client.json("GET", "/v1/runs", params=params)["items"])

    def logs(self, run_id: str) -> builtins.list[dict[str, Any]]:
        return cast(builtins.list[dict[str, Any]], self._client.json("GET", f"/v1/runs/{run_id}/logs")["items"])

    def confusion_matrix(self, run_id: str, epoch: int | None = None) -> dict[str, Any]:
        params = {"epoch": epoch} if epoch is not None else {}
        return self._client.json("GET", f"/v1/runs/{run_id}/confusion-matrix", params=params)


class TrainyardClient:
    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout)
        self.datasets = Datasets(self)
        self.runs = Runs(self)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.is_error:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text}
            raise TrainyardError(response.status_code, str(body.get("detail")), body.get("errors"))
        return response.json()

    def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return cast(dict[str, Any], self.request(method, path, **kwargs))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TrainyardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
