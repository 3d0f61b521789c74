import pytest

from trainyard_client import EmptyApiKey, TrainyardClient, resolve_connection


def test_an_empty_api_key_variable_is_an_error_not_the_local_admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINYARD_API_KEY", "")
    with pytest.raises(EmptyApiKey, match="TRAINYARD_API_KEY is set but empty"):
        resolve_connection()
    with pytest.raises(EmptyApiKey):
        TrainyardClient("http://127.0.0.1:1")


def test_a_set_api_key_variable_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINYARD_API_KEY", "ty_abc_def")
    assert resolve_connection().api_key == "ty_abc_def"
