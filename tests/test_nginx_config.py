"""deploy/nginx.conf as shipped is accepted by the nginx this platform packages (Debian 12: nginx 1.22)."""

import re
import shutil
import subprocess
from pathlib import Path

CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"  # installed by scripts/test.sh; root's PATH has /usr/sbin


def test_the_shipped_config_passes_nginx_t(tmp_path):
    key, certificate = tmp_path / "privkey.pem", tmp_path / "fullchain.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=chat.example.com",
         "-keyout", key, "-out", certificate],
        check=True, capture_output=True,
    )  # fmt: skip
    # Only what README's Deploy says to set: the certificate paths.
    site = CONFIG.read_text()
    site = re.sub(r"/etc/letsencrypt/live/chat\.example\.com/fullchain\.pem", str(certificate), site)
    site = re.sub(r"/etc/letsencrypt/live/chat\.example\.com/privkey\.pem", str(key), site)
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  include {tmp_path}/site.conf;\n}}\n"
    )

    checked = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True
    )

    assert checked.returncode == 0, checked.stderr
    assert "[warn]" not in checked.stderr and "[emerg]" not in checked.stderr, checked.stderr
