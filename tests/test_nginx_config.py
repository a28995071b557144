"""deploy/nginx.conf as shipped is accepted by the nginx this platform packages (Debian 12: nginx 1.22)."""

import subprocess

from tests.nginx import NGINX, render_shipped_config


def test_the_shipped_config_passes_nginx_t(tmp_path):
    # Only what README's Deploy says to set: the certificate paths.
    config = render_shipped_config(tmp_path)

    checked = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(config)], capture_output=True, text=True)

    assert checked.returncode == 0, checked.stderr
    assert "[warn]" not in checked.stderr and "[emerg]" not in checked.stderr, checked.stderr
