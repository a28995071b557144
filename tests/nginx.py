"""deploy/nginx.conf made to run from a test's own directory, otherwise as shipped.

Only what a test cannot keep is changed, each by an exact replacement that
fails if the shipped text no longer has it, so that a test never runs
something else than the file we ship: the certificate paths (to a self-signed
certificate for chat.example.com) and, when asked, the listen addresses and the
upstream's server lines. The map, the hash and the locations stay as shipped.
"""

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"  # installed by scripts/test.sh; root's PATH has /usr/sbin
HOST = "chat.example.com"
SHIPPED_UPSTREAM_SERVERS = "    server 127.0.0.1:8001;\n    server 127.0.0.1:8002;\n"
# Without these nginx creates and writes its temp directories under /var/lib/nginx, outside the test's directory.
TEMP_PATH_DIRECTIVES = (
    "client_body_temp_path",
    "proxy_temp_path",
    "fastcgi_temp_path",
    "uwsgi_temp_path",
    "scgi_temp_path",
)


def render_shipped_config(
    directory: Path, *, https_port: int | None = None, http_port: int | None = None, backend_ports: Sequence[int] = ()
) -> Path:
    """Write the site and an nginx.conf that includes it into directory; return the nginx.conf.

    https_port and http_port move the TLS and the plain server to loopback ports;
    backend_ports replace the upstream's daphne processes, one server line each.
    """
    key, certificate = self_signed_certificate(directory)
    site = CONFIG.read_text()
    site = replace_once(site, f"/etc/letsencrypt/live/{HOST}/fullchain.pem", str(certificate))
    site = replace_once(site, f"/etc/letsencrypt/live/{HOST}/privkey.pem", str(key))
    if https_port is not None:
        site = replace_once(site, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    if http_port is not None:
        site = replace_once(site, "listen 80;", f"listen 127.0.0.1:{http_port};")
    if backend_ports:
        servers = "".join(f"    server 127.0.0.1:{port};\n" for port in backend_ports)
        site = replace_once(site, SHIPPED_UPSTREAM_SERVERS, servers)
    (directory / "site.conf").write_text(site)

    temp_paths = "".join(f"  {directive} {directory}/{directive};\n" for directive in TEMP_PATH_DIRECTIVES)
    config = directory / "nginx.conf"
    config.write_text(
        f"pid {directory}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  access_log off;\n{temp_paths}  include {directory}/site.conf;\n}}\n"
    )
    return config


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A key and a certificate for HOST, valid for a day, written into directory."""
    key, certificate = directory / "privkey.pem", directory / "fullchain.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={HOST}",
         "-keyout", key, "-out", certificate],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, certificate


def replace_once(text: str, shipped: str, replacement: str) -> str:
    assert text.count(shipped) == 1, f"deploy/nginx.conf no longer has {shipped!r} exactly once: update tests/nginx.py"
    return text.replace(shipped, replacement)
