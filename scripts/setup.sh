# Shared set-up for the README's two commands (tests/run.sh, scripts/demo.sh): installs what is
# missing on this machine (OpenSSH's server and client, Python's venv module; for the tests also
# BusyBox and, where the distribution has it, Dropbear: servers the tests run), then creates the
# project's own virtual environment .venv, installs the package into it and sets $PY.
#
# Nothing is installed into the system's or the user's Python: everything Python goes into .venv.
# On a Debian-like machine run as root it installs missing system packages with apt-get; otherwise
# it names them and stops. Source it from the repository root with EXTRAS set to the package
# extras wanted ("" or "test").

say() { echo "${SETUP_NAME:-setup}: $*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
have_sshd() { have sshd || [ -x /usr/sbin/sshd ]; }

missing_system_packages() {
    have_sshd || echo openssh-server
    { have ssh && have ssh-keygen && have scp; } || echo openssh-client
    if ! have python3; then
        echo python3 python3-venv
    elif [ ! -x .venv/bin/python ] && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        echo python3-venv
    fi
    if [ "${EXTRAS:-}" = test ]; then
        have busybox || echo busybox
    fi
}

# Dropbear is tested where the distribution offers it; a machine without it skips that test.
optional_system_packages() {
    if [ "${EXTRAS:-}" = test ] && ! have dropbear && have apt-cache &&
        apt-cache policy dropbear-bin 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        echo dropbear-bin
    fi
}

install_system_packages() {
    local packages optional=""
    packages=$(missing_system_packages | tr '\n' ' ')
    packages=${packages% }
    if [ "$(id -u)" = 0 ] && have apt-get; then
        # apt-cache knows Dropbear only once the package lists exist: read them first if needed.
        [ -z "$packages" ] || apt-get update -qq
        optional=$(optional_system_packages)
    fi
    packages="${packages:+$packages }$optional"
    packages=${packages% }
    [ -n "$packages" ] || return 0
    if [ "$(id -u)" != 0 ] || ! have apt-get; then
        say "missing $packages: install them (Debian: sudo apt-get install $packages) and run again"
        exit 1
    fi
    say "installing $packages"
    # shellcheck disable=SC2086  # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null
}

choose_python() {
    if [ ! -x .venv/bin/python ]; then
        say "creating .venv (the project's own Python environment)"
        python3 -m venv .venv
    fi
    PY="$PWD/.venv/bin/python"
    # Commands the tests start (opswatch, python) come from .venv too.
    export PATH="$PWD/.venv/bin:$PATH"
}

# pip install -e takes seconds even with everything in place: skip it while pyproject.toml and
# the environment are the ones of the last install and opswatch still imports from this checkout.
install_python_packages() {
    local stamp="build/env-${EXTRAS:-base}.stamp" wanted
    wanted=$("$PY" -c 'import hashlib, sys
print(sys.prefix, hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && "$PY" -c 'import pathlib, sys
import opswatch
sys.exit(pathlib.Path(opswatch.__file__).parent != pathlib.Path("src/opswatch").resolve())' \
        2>/dev/null; then
        return 0
    fi
    PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
        "$PY" -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
    mkdir -p build
    echo "$wanted" >"$stamp"
}

install_system_packages
choose_python
install_python_packages
