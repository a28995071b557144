"""deploy/chatsite@.service as shipped lets one process hold the streams the site is built for, and give back
the memory they used once they close."""

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.servers import deployed_env

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "chatsite@.service"
# What one process is measured holding open (bench/, memory phase), each stream two sockets.
STREAMS_A_PROCESS = 2000


def test_a_process_may_open_the_sockets_of_its_streams():
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # systemd's keys are case-sensitive
    unit.read_string(UNIT.read_text())

    limit = unit["Service"].get("LimitNOFILE", "1024")  # systemd's soft default when the unit says nothing

    assert limit == "infinity" or int(limit.split(":")[0]) >= 2 * STREAMS_A_PROCESS + 1000


def test_the_unit_runs_every_process_with_the_allocator_the_site_is_tested_and_measured_with():
    unit = UNIT.read_text().splitlines()

    assert "EnvironmentFile=/srv/chatsite/deploy/allocator.env" in unit
    # Before .env, so that a deployment's own settings win.
    assert unit.index("EnvironmentFile=/srv/chatsite/deploy/allocator.env") < unit.index(
        "EnvironmentFile=/srv/chatsite/.env"
    )
    assert deployed_env()["LD_PRELOAD"] == "libjemalloc.so.2"


# A process that made many small objects for its streams, kept a few of them (one of every 1,000: what a
# process keeps of its streams is caches, pooled connections, grown tables) and let the rest go.
STREAMS_FREED = """
import json, os, time

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

before = rss_mb()
made = [{"stream": n, "text": f"token {n}", "more": [n, n + 1]} for n in range(400_000)]
kept = made[::1000]
peak = rss_mb()
del made
after = rss_mb()
for _ in range(50):  # what is freed goes back within a second
    time.sleep(0.1)
    after = rss_mb()
    if after - before < (peak - before) / 4:
        break
maps = open("/proc/self/maps").read()
print(json.dumps({"before": before, "peak": peak, "after": after, "jemalloc": "libjemalloc" in maps}))
"""


def test_a_process_as_deployed_gives_back_the_memory_its_streams_freed():
    env = os.environ | deployed_env()
    ran = subprocess.run(
        [sys.executable, "-c", STREAMS_FREED], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    memory = json.loads(ran.stdout)

    assert memory["jemalloc"], ran.stderr
    assert memory["peak"] - memory["before"] > 100  # MB: the objects were made
    assert memory["after"] - memory["before"] < (memory["peak"] - memory["before"]) / 4
