"""What conversations.db.db_step costs per step, with the pool and its check on checkout.

    DATABASE_URL=postgres://... .venv/bin/python bench/db_step_bench.py [--steps 2000]

DATABASE_URL must name a PostgreSQL database that `manage.py migrate` has set
up (scripts/test.sh's or bench/stream_bench.py's throwaway one will do); the
bench only reads. One small query (a primary-key lookup on the user table) is
run `--steps` times, one step after another from the event loop, each way:

- `kept`: a bare sync_to_async hop to the shared thread that keeps its
  connection between steps: what db_step did before, and what left a process
  failing after a PostgreSQL restart;
- `db_step`: db_step as it is: the connection goes back to the pool after each
  step and is checked when the next step takes it, by a poll of its socket
  (chatsite/postgresql/base.py);
- `db_step_query_check`: the same with Django's check instead (an empty query,
  a round trip), what db_step did until 30 Nov 2026;
- `new_connection`: no pool, a new connection per step (what every request
  paid before the pool), fewer steps.

Per way: wall time per step (p50, mean) and this process's CPU per step.
Figures go to stdout as JSON; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")


async def measure(step, steps: int) -> dict:
    for _ in range(min(50, steps)):  # warm-up: the pool fills, the thread starts
        await step()
    walls = []
    cpu_before = time.process_time()
    for _ in range(steps):
        started = time.perf_counter()
        await step()
        walls.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu_before
    return {
        "steps": steps,
        "wall_us_p50": round(statistics.median(walls) * 1e6, 1),
        "wall_us_mean": round(statistics.fmean(walls) * 1e6, 1),
        "cpu_us_per_step": round(cpu / steps * 1e6, 1),
    }


async def main(steps: int) -> dict:
    import django

    django.setup()
    from asgiref.sync import sync_to_async
    from django.db import connection
    from psycopg_pool import ConnectionPool

    from accounts.models import User
    from chatsite.postgresql import base as backend
    from conversations.db import db_step

    if connection.vendor != "postgresql":
        raise SystemExit("DATABASE_URL must name a PostgreSQL database")

    def lookup() -> bool:
        return User.objects.filter(pk=1).exists()

    async def reset(**changes) -> None:
        def on_thread() -> None:
            connection.close()
            connection.close_pool()
            connection.settings_dict.update(changes)

        await sync_to_async(on_thread)()

    pool_options = dict(connection.settings_dict["OPTIONS"]["pool"])
    results = {}
    results["kept"] = await measure(lambda: sync_to_async(lookup)(), steps)
    await reset()
    results["db_step"] = await measure(lambda: db_step(lookup), steps)
    await reset()
    socket_check, backend.connection_check = backend.connection_check, ConnectionPool.check_connection
    results["db_step_query_check"] = await measure(lambda: db_step(lookup), steps)
    backend.connection_check = socket_check
    await reset(OPTIONS={**connection.settings_dict["OPTIONS"], "pool": False})
    results["new_connection"] = await measure(lambda: db_step(lookup), max(steps // 20, 20))
    await reset(OPTIONS={**connection.settings_dict["OPTIONS"], "pool": pool_options})
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    arguments = parser.parse_args()
    load = os.getloadavg()
    figures = asyncio.run(main(arguments.steps))
    print(json.dumps({"loadavg": load, "cpus": os.cpu_count(), **figures}, indent=2))
