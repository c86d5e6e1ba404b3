# Shared set-up for the README's two commands (tests/run.sh, scripts/demo.sh): installs what is
# missing on this machine (OpenSSH's server and client, Python, the package), then sets $PY.
#
# On a Debian-like machine run as root it installs missing system packages with apt-get; otherwise
# it names them and stops. Where the system Python refuses pip installs (PEP 668) it uses .venv.
# Source it from the repository root with EXTRAS set to the package extras wanted ("" or "test").

say() { echo "${SETUP_NAME:-setup}: $*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
have_sshd() { have sshd || [ -x /usr/sbin/sshd ]; }

# True when python3 is the system's own (PEP 668 "externally managed") outside any venv.
python_is_system_managed() {
    python3 -c 'import pathlib, sys, sysconfig
managed = pathlib.Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED").exists()
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)'
}

missing_system_packages() {
    have_sshd || echo openssh-server
    { have ssh && have ssh-keygen && have scp; } || echo openssh-client
    if ! have python3; then
        echo python3 python3-venv
    elif [ ! -x .venv/bin/python ] && python_is_system_managed \
        && ! python3 -c 'import ensurepip' 2>/dev/null; then
        echo python3-venv
    fi
}

install_system_packages() {
    local packages
    packages=$(missing_system_packages | tr '\n' ' ')
    packages=${packages% }
    [ -n "$packages" ] || return 0
    if [ "$(id -u)" != 0 ] || ! have apt-get; then
        say "missing $packages: install them (Debian: sudo apt-get install $packages) and run again"
        exit 1
    fi
    say "installing $packages"
    apt-get update -qq
    # shellcheck disable=SC2086  # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null
}

choose_python() {
    if [ -x .venv/bin/python ]; then
        PY="$PWD/.venv/bin/python"
    elif python_is_system_managed; then
        say "creating .venv (the system Python does not take pip installs)"
        python3 -m venv .venv
        PY="$PWD/.venv/bin/python"
    else
        PY=$(command -v python3)
    fi
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
