"""deploy/chatsite@.service as shipped lets one process hold the streams the site is built for."""

import configparser
from pathlib import Path

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "chatsite@.service"
# What one process is measured holding open (bench/, memory phase), each stream two sockets.
STREAMS_A_PROCESS = 2000


def test_a_process_may_open_the_sockets_of_its_streams():
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # systemd's keys are case-sensitive
    unit.read_string(UNIT.read_text())

    limit = unit["Service"].get("LimitNOFILE", "1024")  # systemd's soft default when the unit says nothing

    assert limit == "infinity" or int(limit.split(":")[0]) >= 2 * STREAMS_A_PROCESS + 1000
