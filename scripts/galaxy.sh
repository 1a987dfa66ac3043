#!/usr/bin/env bash
# Render q2-aam's actions as Galaxy tools and lint them (`make galaxy`):
#   galaxy-tools/suite_qiime2__aam/   one tool XML per action, test-data/ for the tests q2galaxy makes from the
#                                     usage examples (tiny models are trained to write them: a minute on a CPU)
#   galaxy-tools/tool_conf_aam.xml    a Galaxy tool panel section listing those tools
# then `planemo lint` on them. Every data input draws two errors from q2galaxy's own template
# (InputsDataOptionsFilterAttribFiltersType, InputsDataOptionsFiltersRef), for every plugin; tests/test_galaxy.py
# fails on anything else. Usage: scripts/galaxy.sh [OUTPUT_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/galaxy-tools}" && cd "${1:-$ROOT/galaxy-tools}" && pwd)"
SUITE="$OUT/suite_qiime2__aam"
[ -x "$ROOT/.venv/bin/q2galaxy" ] || { echo "q2galaxy is missing: run make setup (it needs ../shared/vendor)" >&2; exit 1; }

# q2galaxy reads package versions from a conda environment's conda-meta/; an empty one makes it take them from
# the installed Python packages
conda="$(mktemp -d)"
trap 'rm -rf "$conda"' EXIT
mkdir "$conda/conda-meta"
echo "rendering the tools into $SUITE"
CONDA_PREFIX="$conda" MPLBACKEND=Agg OMP_NUM_THREADS=1 "$ROOT/.venv/bin/q2galaxy" template plugin aam "$OUT" \
    > "$OUT/q2galaxy.log"

{
    echo '<?xml version="1.0"?>'
    echo '<!-- Galaxy tool panel section for q2-aam: add it to the toolbox of your tool_conf.xml -->'
    echo '<toolbox>'
    echo '    <section id="qiime2__aam" name="QIIME 2 aam">'
    for tool in "$SUITE"/qiime2__aam__*.xml; do
        echo "        <tool file=\"$tool\"/>"
    done
    echo '    </section>'
    echo '</toolbox>'
} > "$OUT/tool_conf_aam.xml"
echo "tool panel section: $OUT/tool_conf_aam.xml"

PLANEMO="$ROOT/.venv-galaxy/bin/planemo"
[ -x "$PLANEMO" ] || { echo "planemo is missing (make setup installs it into .venv-galaxy): not linted" >&2; exit 1; }
report="$OUT/planemo-lint.txt"
"$PLANEMO" lint --report_level warn "$SUITE" > "$report" 2>&1 || true
template='\((InputsDataOptionsFilterAttribFiltersType|InputsDataOptionsFiltersRef)\)|TestsCaseValidation.*leading underscores; e\.g\., use .q2galaxy__GUI__'
findings="$(grep -E '^\.\. (ERROR|WARNING)' "$report" || true)"
other="$(grep -vE "$template" <<< "$findings" || true)"
echo "planemo lint: $(grep -cE "$template" <<< "$findings") findings of q2galaxy's template (report: $report)"
if [ -n "$other" ]; then
    echo "and these of q2-aam's:" >&2
    echo "$other" >&2
    exit 1
fi
echo "nothing else"
