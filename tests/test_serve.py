"""chatsite.serve, the site's server as deployed, runs daphne on uvloop's event loop."""

import subprocess
import sys

from tests.servers import REPO_ROOT


def test_daphne_runs_on_uvloops_event_loop():
    # daphne makes its loop as it is imported: a policy set any later would leave it on asyncio's own loop.
    probe = "import chatsite.serve, daphne.server; print(type(daphne.server.twisted_loop).__module__)"

    loop_module = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()

    assert loop_module == "uvloop"
