"""API keys: format, stored form, scope implications."""

from datetime import UTC, datetime

from shared.apikeys import Scope, grants, key_document, new_key, parse_key, secret_matches


def test_key_is_stored_as_id_and_hash_only() -> None:
    key, doc = new_key("alpha", "ci", [Scope.RUNS_READ, Scope.RUNS_READ], created_by="admin", now=datetime.now(UTC))
    key_id, secret = parse_key(key) or ("", "")
    assert doc["_id"] == key_id and doc["scopes"] == ["runs:read"] and doc["revoked_at"] is None
    assert secret not in str(doc) and secret_matches(doc["secret_sha256"], secret)
    assert not secret_matches(doc["secret_sha256"], secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert key_document(key, "alpha", "ci", [Scope.RUNS_READ], created_by="admin",
                        now=doc["created_at"]) == doc


def test_malformed_keys_do_not_parse() -> None:
    key, _ = new_key("alpha", "x", [Scope.ADMIN], created_by="t", now=datetime.now(UTC))
    for bad in ("", "ty_", key + "x", key.replace("ty_", "tz_"), key[:-1], "Bearer " + key, key.upper()):
        assert parse_key(bad) is None, bad


def test_scopes_imply_reading_what_they_change_and_admin_everything() -> None:
    assert grants(["runs:write"], Scope.RUNS_READ) and not grants(["runs:read"], Scope.RUNS_WRITE)
    assert grants(["models:publish"], Scope.MODELS_READ) and not grants(["runs:write"], Scope.DATASETS_READ)
    assert all(grants(["admin"], scope) for scope in Scope)
    assert not grants(["superuser", ""], Scope.RUNS_READ)
