# Sourced by scripts/setup-*-venv.sh: one way to make an environment of its own under
# .venvs/NAME for a tool that pins libraries the project's .venv must not get.
#
#   setup_venv NAME PYTHON CHECK REQUIREMENT...
#
# NAME         the folder under .venvs/ and the marker .venvs/NAME/.NAME-setup-done
# PYTHON       the interpreter to create it with; "" = python3.11, else python3
# CHECK        a shell command (evaluated with $VENV set) that succeeds when the
#              environment is usable; run after installing too, as the verification
# REQUIREMENT  pip requirement specifiers; the marker holds them, space-separated
#
# Idempotent: nothing is installed when the marker holds these requirements and CHECK
# passes.  Debian's python3.11 without python3-venv has no ensurepip: as root with
# apt-get, python3-venv is installed and the venv made again.

setup_venv() {
    local name="$1" python="$2" check="$3"
    shift 3
    local reqs=("$@")
    local root tag
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    tag="setup-$name-venv"
    VENV="$root/.venvs/$name"
    local marker="$VENV/.$name-setup-done"
    local want="${reqs[*]}"

    if [ -z "$python" ]; then
        for candidate in python3.11 python3; do
            if command -v "$candidate" >/dev/null 2>&1; then
                python="$(command -v "$candidate")"
                break
            fi
        done
    fi
    if [ -z "$python" ]; then
        echo "$tag: no python3.11 found (set ${name^^}_PYTHON)" >&2
        return 1
    fi

    if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] && eval "$check" >/dev/null 2>&1; then
        echo "$tag: $VENV already has $want; nothing to do"
        return 0
    fi

    if [ ! -x "$VENV/bin/python" ]; then
        echo "$tag: creating $VENV with $python ($("$python" --version 2>&1))"
        mkdir -p "$root/.venvs"
        if ! "$python" -m venv "$VENV" 2>/dev/null; then
            if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
                echo "$tag: installing python3-venv with apt-get"
                rm -rf "$VENV"
                apt-get update -qq
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
                "$python" -m venv "$VENV"
            else
                echo "$tag: '$python -m venv' failed; install python3-venv" >&2
                return 1
            fi
        fi
    fi

    echo "$tag: installing $want into $VENV"
    _venv_pip_install --upgrade pip
    _venv_pip_install "${reqs[@]}"
    eval "$check"
    echo "$want" > "$marker"
    local dist="${reqs[0]%%[=<>!~ ]*}"
    echo "$tag: done; $("$VENV/bin/python" -m pip show "$dist" 2>/dev/null | grep -i '^version' || true)"
}

_venv_pip_install() {
    # Quiet; drops pip's notes about local find-links folders that do not exist.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
