"""``GET /healthz`` reports the database and the channel layer (SPEC §5)."""

import pytest
from channels.layers import channel_layers


@pytest.fixture(autouse=True)
def fresh_layer():
    channel_layers.backends.clear()  # each request runs in a loop of its own
    yield
    channel_layers.backends.clear()


def test_healthz_is_ok_when_database_and_channel_layer_answer(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["channel_layer"]["ok"] is True


def test_healthz_is_503_naming_what_failed(client, db, monkeypatch):
    from cpweb import health

    def broken():
        raise ConnectionError("database is down")

    monkeypatch.setattr(health, "_database", broken)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == {
        "ok": False,
        "error": "ConnectionError: database is down",
    }
    assert body["checks"]["channel_layer"]["ok"] is True
