"""make run's first run: a long silent build says it is still at work, and the commands printed work as printed."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.servers import REPO_ROOT

# A PATH without the virtualenv, as in the terminal of someone who just cloned the repository.
PLAIN_PATH = "/usr/local/bin:/usr/bin:/bin"


def bash(script: str, **env: str) -> subprocess.CompletedProcess:
    """Run `script` with scripts/bootstrap.sh's functions, as scripts/run.sh does."""
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n. scripts/bootstrap.sh\n{script}"],
        cwd=REPO_ROOT,
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def progress_lines(output: str) -> list[int]:
    """The seconds each "still ..." line says have gone by."""
    return [
        int(minutes) * 60 + int(seconds)
        for minutes, seconds in re.findall(r"\.\.\. still building the thing: (\d+) min (\d+) s so far", output)
    ]


def test_a_silent_build_says_at_each_interval_that_it_is_still_at_work_and_for_how_long():
    result = bash('with_progress "building the thing" sh -c "echo built; sleep 4"', PROGRESS_INTERVAL="1")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "built"  # the command's own output passes through
    elapsed = progress_lines(result.stdout)
    assert len(elapsed) >= 2, result.stdout
    assert elapsed == sorted(set(elapsed)) and elapsed[0] >= 1


def test_a_failed_build_fails_with_its_status_and_the_counter_stops_with_it():
    result = bash(
        'with_progress "building the thing" sh -c "sleep 1.5; exit 3" || echo "status $?"\n'
        "echo ended\n"
        "sleep 2.5\n"
        "echo later",
        PROGRESS_INTERVAL="1",
    )

    lines = result.stdout.splitlines()
    assert "status 3" in lines
    after_the_build = lines[lines.index("ended") :]
    assert after_the_build == ["ended", "later"], result.stdout


def test_without_the_function_catching_it_a_failed_build_stops_the_script():
    result = bash('with_progress "building the thing" sh -c "exit 3"\necho "went on"', PROGRESS_INTERVAL="1")

    assert result.returncode == 3
    assert "went on" not in result.stdout


@pytest.fixture
def fresh_site_env(tmp_path: Path) -> dict[str, str]:
    """The embedded set-up's environment: SQLite in its own var/, nothing else configured."""
    env = {name: value for name, value in os.environ.items() if name not in ("DATABASE_URL", "REDIS_URL")}
    return env | {"VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "chatsite.settings"}


def test_the_commands_ensureadmin_prints_work_as_printed(fresh_site_env):
    python = ".venv/bin/python"  # as scripts/run.sh runs it

    def manage(*args: str) -> str:
        result = subprocess.run(
            [python, "manage.py", *args], cwd=REPO_ROOT, env=fresh_site_env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    manage("migrate", "--noinput")
    created, again = manage("ensureadmin"), manage("ensureadmin")

    printed = [
        re.search(r"change it with: (.+) changepassword admin$", created, re.MULTILINE),
        re.search(r"forgot the password\? (.+) changepassword admin$", again, re.MULTILINE),
    ]
    assert all(printed), (created, again)
    for command in {match.group(1) for match in printed}:
        assert command == f"{python} manage.py"
        # As a person pastes it, in a shell whose PATH knows nothing of the virtualenv.
        result = subprocess.run(
            ["bash", "-c", f"{command} changepassword --help"],
            cwd=REPO_ROOT,
            env=fresh_site_env | {"PATH": PLAIN_PATH},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "Change a user's password" in result.stdout
