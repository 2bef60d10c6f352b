import pytest

from config import health


@pytest.mark.django_db
def test_healthz_reports_database_and_broker(client):
    body = client.get("/healthz").json()
    assert body["ok"] is True and body["database"]["ok"] and body["broker"]["ok"]
    assert isinstance(body["workers"], list)


@pytest.mark.django_db
def test_healthz_is_503_with_a_clear_error_when_the_broker_is_down(client, monkeypatch):
    def down():
        raise ConnectionRefusedError("broker at redis://nowhere refused the connection")

    monkeypatch.setattr(health, "_broker", down)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"] == {"ok": False, "error": "ConnectionRefusedError: broker at redis://nowhere refused the connection"}
    assert response.json()["workers"] == []
