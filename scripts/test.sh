#!/usr/bin/env bash
# make test: install what is missing, start throwaway PostgreSQL and Redis,
# run the linters and the whole suite. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bootstrap.sh

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "Need root (or sudo) to run: $*" >&2
        return 1
    fi
}

free_port() {
    "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- Debian packages -------------------------------------------------------
missing=()
for package in postgresql redis-server chromium nginx openssl libjemalloc2; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
# Node and npm for the openai Node SDK's tests; a Node that bundles its own npm counts.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ! -d "$VENV" ] && command -v python3.11 >/dev/null && ! python3.11 -c "import ensurepip" 2>/dev/null; then
    missing+=(python3.11-venv)
fi
# llama-cpp-python compiles from source when pip has no cached wheel.
if ! command -v c++ >/dev/null && ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
    missing+=(g++)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "Installing Debian packages: ${missing[*]}"
    # Keep the packages' own services (a system PostgreSQL on 5432, a system
    # Redis) from starting: the suite runs its own throwaway ones.
    policy_rc_d=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy_rc_d=/usr/sbin/policy-rc.d
        trap 'as_root rm -f "$policy_rc_d"' EXIT
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy_rc_d" >/dev/null
        as_root chmod 755 "$policy_rc_d"
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    status=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" || status=$?
    if [ -n "$policy_rc_d" ]; then
        as_root rm -f "$policy_rc_d"
        trap - EXIT
    fi
    [ "$status" -eq 0 ] || exit "$status"
fi

# --- Python packages -------------------------------------------------------
venv_create
requirements_install requirements-dev.txt
local_model_install

# --- The openai Node SDK, a second real client of /v1 (tests/node) ------------
# Installed from the committed lock file, again only when the lock file changed.
if ! cmp -s tests/node/package-lock.json tests/node/node_modules/.installed-lock.json; then
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
    cp tests/node/package-lock.json tests/node/node_modules/.installed-lock.json
fi

# --- Throwaway PostgreSQL and Redis ----------------------------------------
# Debian keeps the server binaries out of PATH, one directory per major version.
pg_bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
if [ ! -x "$pg_bin/initdb" ] && command -v initdb >/dev/null; then
    pg_bin=$(dirname "$(command -v initdb)")
fi
if [ ! -x "$pg_bin/initdb" ]; then
    echo "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin nor on PATH" >&2
    exit 1
fi

# PostgreSQL refuses to run as root: as root, run it as the postgres user.
if [ "$(id -u)" -eq 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin postgres
    fi
    as_pg=(runuser -u postgres --)
else
    as_pg=()
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/chatsite-test.XXXXXX")
pgdata="$scratch/pgdata"
redis_pid=""
postgres_started=""
step_pid=""

services_stop() {
    trap - EXIT INT TERM
    if [ -n "$postgres_started" ]; then
        "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pgdata" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    if [ -n "$redis_pid" ]; then
        child_stop "$redis_pid" TERM 10
    fi
    rm -rf "$scratch"
}

on_signal() {
    if [ -n "$step_pid" ]; then
        # The step runs in a session of its own (see step below), so this is
        # the one Ctrl-C it gets, for a Ctrl-C or a TERM alike: pytest then
        # unwinds and stops the servers its tests started.
        kill -INT -- "-$step_pid" 2>/dev/null || true
        child_stop "$step_pid" "" 60
        kill -KILL -- "-$step_pid" 2>/dev/null || true
    fi
    exit "$1"
}
trap services_stop EXIT
trap 'on_signal 130 INT' INT
trap 'on_signal 143 TERM' TERM
if [ "${#as_pg[@]}" -gt 0 ]; then
    chown postgres: "$scratch"
fi

pg_port=$(free_port)
pg_password=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(16))')
"${as_pg[@]}" mkdir -m 700 "$scratch/pgsocket"
"${as_pg[@]}" "$pg_bin/initdb" -D "$pgdata" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C --no-sync >"$scratch/initdb.log" 2>&1 || {
    cat "$scratch/initdb.log" >&2
    exit 1
}
"${as_pg[@]}" tee -a "$pgdata/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$scratch/pgsocket'
max_connections = 600
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
postgres_started=yes
if ! "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pgdata" -l "$scratch/postgres.log" -w -t 60 start >/dev/null; then
    echo "PostgreSQL did not start:" >&2
    tail -n 30 "$scratch/postgres.log" >&2
    exit 1
fi
"${as_pg[@]}" "$pg_bin/psql" -q -h "$scratch/pgsocket" -p "$pg_port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE chatsite LOGIN CREATEDB PASSWORD '$pg_password'" \
    -c "CREATE DATABASE chatsite OWNER chatsite"
export DATABASE_URL="postgres://chatsite:$pg_password@127.0.0.1:$pg_port/chatsite"
echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pg_port"

redis_port=$(free_port)
mkdir "$scratch/redis"
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --dir "$scratch/redis" --logfile "$scratch/redis.log" --daemonize no </dev/null >/dev/null 2>&1 &
redis_pid=$!
redis_up=""
for _ in $(seq 100); do
    kill -0 "$redis_pid" 2>/dev/null || break
    reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$redis_port" && printf 'PING\r\n' >&3 && read -r -t 2 line <&3 && echo "$line") 2>/dev/null || true)
    if [ "${reply%$'\r'}" = "+PONG" ]; then
        redis_up=yes
        break
    fi
    sleep 0.1
done
if [ -z "$redis_up" ]; then
    echo "Redis did not start:" >&2
    tail -n 30 "$scratch/redis.log" >&2
    exit 1
fi
export REDIS_URL="redis://127.0.0.1:$redis_port/0"
# Tests race 200 threads for one reservation, each on its own connection.
export DB_POOL_MAX_SIZE=250
echo "Redis on 127.0.0.1:$redis_port"

export PLAYWRIGHT_CHROMIUM=/usr/bin/chromium
LOCAL_MODEL_GGUF=$("$VENV/bin/python" scripts/local_model_path.py)
export LOCAL_MODEL_GGUF

# --- Checks, stopping at the first failure ----------------------------------
# Each step runs in the background so that the traps above fire as soon as a
# signal arrives (bash holds them while a foreground command runs), in a
# session of its own so that on_signal is the only one to pass signals on, with
# Ctrl-C restored and the terminal's stdin, as if it ran in the foreground.
exec 3<&0
step() {
    echo "== ${*#"$VENV/bin/"}"
    (
        trap - INT
        exec setsid "$@" <&3 3<&-
    ) &
    step_pid=$!
    local status=0
    wait "$step_pid" || status=$?
    step_pid=""
    return "$status"
}

step "$VENV/bin/ruff" check .
step "$VENV/bin/ruff" format --check .
step "$VENV/bin/python" manage.py makemigrations --check --dry-run
step "$VENV/bin/pytest" "$@"
