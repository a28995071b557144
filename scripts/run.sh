#!/usr/bin/env bash
# make run: set up .venv/, start the local model unless an upstream is
# configured, prepare the database and serve the site. Ctrl-C stops all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bootstrap.sh

# KEY=value lines from .env; variables already in the environment win.
dotenv_load() {
    local line key value
    while IFS= read -r line || [ -n "$line" ]; do
        line="${line#"${line%%[![:space:]]*}"}"
        case "$line" in "" | "#"*) continue ;; esac
        line="${line#export }"
        key="${line%%=*}"
        value="${line#*=}"
        key="${key%"${key##*[![:space:]]}"}"
        if [ "$key" = "$line" ] || ! [[ "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
            echo ".env: ignoring a line that is not KEY=value: $line" >&2
            continue
        fi
        value="${value%$'\r'}"
        value="${value#"${value%%[![:space:]]*}"}"
        if [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]]; then
            value="${BASH_REMATCH[1]}"
        else
            value="${value%%[[:space:]]#*}"
            value="${value%"${value##*[![:space:]]}"}"
        fi
        if [ -z "${!key+set}" ]; then
            export "$key=$value"
        fi
    done <.env
}

http_ok() {
    "$VENV/bin/python" -c '
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    opener.open(sys.argv[1], timeout=2).close()
except Exception:
    sys.exit(1)
' "$1"
}

model_pid=""
site_pid=""

stop_all() {
    trap - EXIT INT TERM
    if [ -n "$site_pid" ]; then
        child_stop "$site_pid" TERM 10
    fi
    if [ -n "$model_pid" ]; then
        child_stop "$model_pid" TERM 10
    fi
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -f .env ]; then
    dotenv_load
fi
export PORT="${PORT:-8000}"
mkdir -p "${VAR_DIR:-var}"

venv_create
requirements_install requirements.txt

if [ -z "${OPENAI_BASE_URL:-}" ]; then
    local_model_install
    model_port="${LOCAL_MODEL_PORT:-8081}"
    model_url="http://127.0.0.1:$model_port/v1/models"
    model_log="${VAR_DIR:-var}/local-model.log"
    if http_ok "$model_url"; then
        echo "Something already answers on $model_url; stop it or set LOCAL_MODEL_PORT." >&2
        exit 1
    fi
    echo "Starting the local model (SmolLM2-135M-Instruct) on 127.0.0.1:$model_port, log in $model_log"
    # llama_cpp.server takes every setting from an environment variable of the
    # same name as well (PORT, HOST, MODEL, API_KEY, CACHE...), and PORT and
    # HOST even win over its command line: give it a clean environment.
    # It serves one request at a time; by default a new one cuts the reply being
    # streamed short (another user's, or the site reading its model list): queue them instead.
    env -i PATH="$PATH" HOME="${HOME:-/}" LANG="${LANG:-C.UTF-8}" \
        "$VENV/bin/python" -m llama_cpp.server \
        --model "$("$VENV/bin/python" scripts/local_model_path.py)" \
        --model_alias smollm2-135m \
        --host 127.0.0.1 --port "$model_port" --n_ctx 4096 --interrupt_requests False \
        >"$model_log" 2>&1 &
    model_pid=$!
    deadline=$((SECONDS + 120))
    until http_ok "$model_url"; do
        if ! kill -0 "$model_pid" 2>/dev/null; then
            echo "The local model server exited. Last lines of $model_log:" >&2
            tail -n 30 "$model_log" >&2
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "The local model server did not answer $model_url within 120 s. Last lines of $model_log:" >&2
            tail -n 30 "$model_log" >&2
            exit 1
        fi
        sleep 0.5
    done
else
    echo "Upstream: $OPENAI_BASE_URL"
fi

"$VENV/bin/python" manage.py migrate --noinput
"$VENV/bin/python" manage.py seedcatalog
"$VENV/bin/python" manage.py ensureadmin

# In the background so that the traps above run as soon as a signal arrives;
# daphne itself ignores Ctrl-C there and is stopped by stop_all.
"$VENV/bin/python" -m chatsite.serve -b 127.0.0.1 -p "$PORT" chatsite.asgi:application &
site_pid=$!
for _ in $(seq 100); do
    kill -0 "$site_pid" 2>/dev/null || break
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        echo
        echo "Chat site: http://127.0.0.1:$PORT   (Ctrl-C stops it)"
        echo
        break
    fi
    sleep 0.2
done
# Until the site stops: say so at once if the local model dies (the chat page says so too).
while kill -0 "$site_pid" 2>/dev/null; do
    if [ -n "$model_pid" ] && ! kill -0 "$model_pid" 2>/dev/null; then
        model_status=0
        wait "$model_pid" || model_status=$?
        model_pid=""
        echo >&2
        echo "The local model server stopped (exit status $model_status): the site can write no reply." \
            "Last lines of $model_log:" >&2
        tail -n 20 "$model_log" >&2
        echo "Stop this with Ctrl-C and start make run again." >&2
    fi
    sleep 1
done
wait "$site_pid"
