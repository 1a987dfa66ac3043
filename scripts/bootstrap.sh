#!/usr/bin/env bash
# Set up everything q2-aam needs on a Debian bookworm machine, idempotently:
#   1. QIIME 2 2022.11 from Debian's packages (when the system Python cannot import it),
#   2. a virtual environment .venv that sees those packages (--system-site-packages),
#   3. torch and the other PyPI needs (requirements-venv.txt), and q2-aam itself (editable),
#   4. a `qiime` command inside .venv that runs q2cli with the venv's Python, and a fresh q2cli cache,
#   5. q2-emperor (to plot embeddings) and chromium (the headless browser of the visualization tests) from Debian,
#      and in .venv the emperor package from PyPI, whose plots work (Debian's leaves out their JavaScript),
#   6. for the Galaxy tools: q2galaxy 2022.11.1 (vendored in ../shared/vendor) in .venv, and planemo in its own
#      venv .venv-galaxy (it pins many packages that must not reach .venv).
# Steps 5 and 6 are optional: when they cannot be done (no root, no network) setup says so and goes on, and the
# tests that need them skip with that reason (under CI they fail instead).
# A second run only checks stamps and takes a second or two.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
SYSPY=/usr/bin/python3
APT_PACKAGES="qiime q2cli q2-types q2templates q2-sample-classifier python3-unifrac python3-venv"
GVENV="$ROOT/.venv-galaxy"
Q2GALAXY_SOURCE="$ROOT/../shared/vendor/q2galaxy-2022.11.1.tar.gz"
EMPEROR_VERSION=1.0.4

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
warn() { printf '[setup] WARNING: %s\n' "$*" >&2; }
# has_module PYTHON NAME: whether PYTHON finds module NAME (without importing it, which takes seconds)
has_module() { "$1" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$2') is None)" 2>/dev/null; }

hash_files() { { cat "$@" 2>/dev/null || true; } | sha256sum | cut -c1-16; }
# pip_stamped STAMP WARNING PACKAGE: pip-install PACKAGE into .venv without its dependencies (Debian's numpy,
# pandas, scikit-bio stay), then leave STAMP as the only stamp of its kind (.aam-<kind>-*); WARNING when it fails
pip_stamped() {
    if "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation "$3"; then
        rm -f "${1%-*}"-*
        touch "$1"
    else
        warn "$2"
    fi
}

# 1. QIIME 2 from Debian -------------------------------------------------------------------------------
need_apt=0
if [ ! -x "$SYSPY" ]; then
    need_apt=1
elif ! "$SYSPY" -c 'import qiime2, q2cli, q2_types, q2templates, q2_sample_classifier, unifrac, ensurepip' \
        >/dev/null 2>&1; then
    need_apt=1
fi
if [ "$need_apt" = 1 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        die "QIIME 2 is not importable by $SYSPY and apt-get is missing.
  This setup needs Debian bookworm (or newer) with these packages:
    $APT_PACKAGES
  On another system, install QIIME 2 with conda (https://docs.qiime2.org), then inside that environment run
    pip install torch tensorboard tqdm && pip install --no-deps -e ."
    fi
    if [ "$(id -u)" != 0 ]; then
        die "QIIME 2 is not importable by $SYSPY. Install Debian's packages as root, then re-run make:
    sudo apt-get update && sudo apt-get install -y $APT_PACKAGES"
    fi
    say "installing Debian's QIIME 2 packages (about a minute): $APT_PACKAGES"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends $APT_PACKAGES; then
        apt-get update
        apt-get install -y --no-install-recommends $APT_PACKAGES
    fi
    "$SYSPY" -c 'import qiime2, q2_types, unifrac' || die "Debian's QIIME 2 packages installed but do not import"
fi

# 2. the virtual environment ------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import qiime2' >/dev/null 2>&1; then
    say "creating $VENV (sees the system's QIIME 2 packages)"
    rm -rf "$VENV"
    "$SYSPY" -m venv --system-site-packages "$VENV"
fi

# 3. PyPI needs and the project --------------------------------------------------------------------------
pip_stamp="$VENV/.aam-pip-$(hash_files "$ROOT/requirements-venv.txt" "$ROOT/setup.py")"
if [ ! -f "$pip_stamp" ] || ! "$VENV/bin/python" -c 'import torch, aam, q2_aam' >/dev/null 2>&1; then
    say "installing PyPI requirements into the venv (torch, tensorboard, tqdm, pytest)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$ROOT/requirements-venv.txt"
    say "installing q2-aam (editable, without touching Debian's numpy/pandas/biom/scikit-bio)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e "$ROOT"
    rm -f "$VENV"/.aam-pip-*
    touch "$pip_stamp"
fi

# 4. `qiime` inside the venv, and the q2cli cache ------------------------------------------------------------
cat > "$VENV/bin/qiime.new" <<'WRAPPER'
#!/bin/sh
# q2cli through this venv's Python, so the q2-aam plugin (installed here) is visible. The q2cli cache lives
# inside the venv so it never mixes with the cache of the system's /usr/bin/qiime, which lacks q2-aam.
VENV_BIN="$(cd "$(dirname "$0")" && pwd)"
export XDG_CONFIG_HOME="${AAM_Q2CLI_CONFIG:-$VENV_BIN/../etc}"
exec "$VENV_BIN/python" -m q2cli "$@"
WRAPPER
chmod +x "$VENV/bin/qiime.new"
if cmp -s "$VENV/bin/qiime.new" "$VENV/bin/qiime"; then rm "$VENV/bin/qiime.new"; else mv "$VENV/bin/qiime.new" "$VENV/bin/qiime"; fi

cache_stamp="$VENV/.aam-q2cache-$(hash_files "$ROOT/setup.py" "$ROOT"/q2_aam/*.py "$ROOT"/aam/options.py "$pip_stamp")"
if [ ! -f "$cache_stamp" ]; then
    say "refreshing the q2cli cache (qiime dev refresh-cache)"
    "$VENV/bin/qiime" dev refresh-cache >/dev/null
    rm -f "$VENV"/.aam-q2cache-*
    touch "$cache_stamp"
fi

# 5. Emperor and a headless browser, from Debian ------------------------------------------------------------------
extras=""
has_module "$SYSPY" q2_emperor || extras="q2-emperor"
command -v chromium >/dev/null 2>&1 || extras="$extras chromium"
if [ -n "$extras" ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        say "installing from Debian:$extras (Emperor plots; headless browser for the visualization tests)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends $extras >/dev/null \
            || { apt-get update >/dev/null && apt-get install -y --no-install-recommends $extras >/dev/null; } \
            || warn "apt-get could not install$extras: the Emperor and browser tests will skip"
    else
        warn "not installed:$extras. The Emperor and browser tests skip until, as root:
    apt-get install -y --no-install-recommends$extras"
    fi
fi
# Debian's python3-emperor (1.0.3+ds) leaves out the JavaScript libraries every Emperor page loads (require.js,
# jQuery, three.js, ...), so the plots q2-emperor makes with it open blank. The PyPI release carries them; in .venv
# it takes the place of Debian's for q2-emperor (--no-deps: Debian's numpy, pandas and scikit-bio stay).
emperor_stamp="$VENV/.aam-emperor-$EMPEROR_VERSION"
emperor_js="import importlib.util as u, os, sys; s = u.find_spec('emperor'); sys.exit(not (s and os.path.isfile(
    os.path.join(s.submodule_search_locations[0], 'support_files', 'vendor', 'js', 'three.min.js'))))"
if has_module "$SYSPY" q2_emperor && { [ ! -f "$emperor_stamp" ] || ! "$VENV/bin/python" -c "$emperor_js" 2>/dev/null; }
then
    say "installing emperor $EMPEROR_VERSION from PyPI into the venv (with the JavaScript Debian's package lacks)"
    pip_stamped "$emperor_stamp" "emperor $EMPEROR_VERSION did not install: Emperor plots made in .venv will open blank" \
        "emperor==$EMPEROR_VERSION"
fi

# 6. Galaxy: q2galaxy in .venv (it imports the plugin), planemo in .venv-galaxy ----------------------------------
q2galaxy_stamp="$VENV/.aam-q2galaxy-$(hash_files "$Q2GALAXY_SOURCE")"
if [ ! -f "$q2galaxy_stamp" ] || ! has_module "$VENV/bin/python" q2galaxy; then
    if [ -f "$Q2GALAXY_SOURCE" ]; then
        say "installing q2galaxy 2022.11.1 into the venv (renders the plugin as Galaxy tools)"
        pip_stamped "$q2galaxy_stamp" "q2galaxy did not install: the Galaxy tests will skip" "$Q2GALAXY_SOURCE"
    else
        warn "q2galaxy's source is not at $Q2GALAXY_SOURCE: the Galaxy tests will skip"
    fi
fi
galaxy_stamp="$GVENV/.aam-galaxy-$(hash_files "$ROOT/requirements-galaxy.txt")"
if [ ! -f "$galaxy_stamp" ] || [ ! -x "$GVENV/bin/planemo" ]; then
    say "installing planemo (Galaxy's tool linter) into $GVENV (a minute or two, once)"
    rm -rf "$GVENV"
    if "$SYSPY" -m venv "$GVENV" && "$GVENV/bin/python" -m pip install --disable-pip-version-check -q \
            -r "$ROOT/requirements-galaxy.txt"; then
        touch "$galaxy_stamp"
    else
        rm -rf "$GVENV"
        warn "planemo did not install: the Galaxy lint test will skip (the next make retries)"
    fi
fi
say "ready: $VENV (activate with: source .venv/bin/activate)"
