import socket

import pytest
from django.test import Client

from chatsite.settings import redis_caches


@pytest.fixture(autouse=True)
def _an_upstream_is_configured(settings):
    """Without one, /healthz checks the embedded local model too (see test_local_model_health.py)."""
    settings.UPSTREAM_IS_LOCAL = False


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_it_reports_the_database_ok_without_logging_in(db, settings):
    settings.REDIS_URL = ""

    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_it_reports_redis_ok_when_redis_is_configured(db, settings):
    if not settings.REDIS_URL:
        pytest.skip("REDIS_URL is not set; `make test` sets it")

    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_it_fails_when_redis_is_unreachable(db, settings, closed_port):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port}/0"
    settings.CACHES = redis_caches(settings.REDIS_URL)

    response = Client().get("/healthz")

    # A load balancer takes the process out of rotation on anything but 200.
    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "ok", "redis": "error: ConnectionError"}


def test_post_is_not_allowed(db):
    assert Client().post("/healthz").status_code == 405
