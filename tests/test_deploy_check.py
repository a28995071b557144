"""Production security by configuration: with the documented production values (deploy/production.env) Django's
`check --deploy` has nothing to say, and the site answers over HTTPS only, with HSTS and Secure cookies.

Each check runs `manage.py` in a fresh process with exactly that environment, as a server would start.
"""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_ENV = ROOT / "deploy" / "production.env"


def documented_production_values() -> dict[str, str]:
    values = {}
    for line in PRODUCTION_ENV.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def manage(tmp_path: Path, *args: str, **values: str) -> subprocess.CompletedProcess:
    """`python manage.py ARGS` with only these variables set (and none of the test run's own)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "VAR_DIR": str(tmp_path / "var"), **values}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def production(tmp_path) -> dict[str, str]:
    """The documented values, with the one a site must make its own ("change-me") filled in."""
    values = documented_production_values()
    assert values["SECRET_KEY"].startswith("change-me")
    return values | {"SECRET_KEY": secrets.token_urlsafe(50)}


def test_check_deploy_prints_nothing_to_fix_with_the_documented_production_values(tmp_path, production):
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **production)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."
    assert result.stderr == ""


def test_without_them_check_deploy_names_what_is_missing(tmp_path):
    """The embedded defaults serve plain HTTP on 127.0.0.1: fine for `make run`, and the check says so."""
    result = manage(tmp_path, "check", "--deploy", SECRET_KEY=secrets.token_urlsafe(50))

    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr


# What a browser sees from the site configured so, behind nginx (which sets X-Forwarded-Proto).
SEE_AS_A_BROWSER = """
import json
from django.conf import settings
from django.test import Client

browser = Client(SERVER_NAME="chat.example.com")
plain = browser.get("/accounts/login/")
secure = browser.get("/accounts/login/", headers={"X-Forwarded-Proto": "https"})
health = browser.get("/healthz")
print(json.dumps({
    "plain": [plain.status_code, plain.get("Location")],
    "secure": [secure.status_code, secure.get("Strict-Transport-Security")],
    "csrf_cookie_secure": bool(secure.cookies["csrftoken"]["secure"]),
    "health_redirected": health.status_code == 301,
    "session_cookie_secure": settings.SESSION_COOKIE_SECURE,
}))
"""


def test_behind_nginx_the_site_is_https_only_with_hsts_and_secure_cookies(tmp_path, production):
    # The database itself is not under test here: a SQLite file stands in for PostgreSQL.
    values = production | {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "REDIS_URL": ""}

    result = manage(tmp_path, "shell", "-c", SEE_AS_A_BROWSER, **values)

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["plain"] == [301, "https://chat.example.com/accounts/login/"]
    assert seen["secure"] == [200, "max-age=31536000; includeSubDomains; preload"]
    assert seen["csrf_cookie_secure"] and seen["session_cookie_secure"]
    assert not seen["health_redirected"]  # health checks from the host itself stay on plain HTTP


@pytest.mark.parametrize("raw", ["X_Forwarded_Proto", "X-Forwarded-Proto: https", "X Forwarded", "X--Proto"])
def test_a_proxy_header_that_cannot_work_stops_start_up(tmp_path, raw):
    result = manage(tmp_path, "check", SECRET_KEY=secrets.token_urlsafe(50), SECURE_PROXY_SSL_HEADER=raw)

    assert result.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER must be a header name such as X-Forwarded-Proto" in result.stderr
