"""Galaxy: q2galaxy renders every q2-aam action as a Galaxy tool, and `planemo lint` finds nothing in them but the
two errors q2galaxy's own template draws on every data input of every plugin.

q2galaxy turns each usage example into the test of its tool, so these tests also check that every example runs
only its own action (a test may only set that tool's inputs and outputs) and that the files a test names exist.
q2galaxy (vendored in ../shared/vendor) and planemo (its own venv, .venv-galaxy) are installed by `make setup`;
where they are missing the tests skip saying so, and fail under CI.
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest
from qiime2.sdk import PluginManager

from tests.conftest import require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = "suite_qiime2__aam"
# q2galaxy 2022.11.1 writes <options options_filter_attribute=...><filter type="add_value"> on every data input;
# Galaxy's linter rejects that form for every plugin (q2-sample-classifier's 15 tools draw the same two).
TEMPLATE_ERRORS = {"InputsDataOptionsFilterAttribFiltersType", "InputsDataOptionsFiltersRef"}
# q2galaxy names its UI sections and conditionals `__q2galaxy__GUI__...`; a test that sets a parameter inside one
# draws this warning (about the template's names, not about the plugin).
TEMPLATE_WARNING = re.compile(r"names with leading underscores; e\.g\., use 'q2galaxy__GUI__\w+' instead of "
                              r"'__q2galaxy__GUI__\w+'")

PLUGIN = PluginManager().plugins["aam"]


def _planemo():
    for candidate in (os.environ.get("AAM_PLANEMO"), os.path.join(ROOT, ".venv-galaxy", "bin", "planemo"),
                      shutil.which("planemo")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    require("planemo (Galaxy's tool linter)", "`make setup` installs it into .venv-galaxy")


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The rendered tools: `q2galaxy template plugin aam OUT` (which also writes every test's input files)."""
    if importlib.util.find_spec("q2galaxy") is None:
        require("q2galaxy", "`make setup` installs it from ../shared/vendor")
    base = tmp_path_factory.mktemp("galaxy")
    # q2galaxy reads package versions from a conda environment's conda-meta/; an empty one makes it fall back
    # to the versions installed in this Python
    (base / "conda" / "conda-meta").mkdir(parents=True)
    out = base / "tools"
    out.mkdir()
    env = dict(os.environ, CONDA_PREFIX=str(base / "conda"), MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "q2galaxy", "template", "plugin", "aam", str(out)], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"q2galaxy failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return out / SUITE


def _parse_lint(text):
    """`planemo lint` output -> {tool file name: [(level, code, message), ...]}."""
    found, tool = {}, None
    for line in text.splitlines():
        header = re.match(r"Linting tool (.+\.xml)$", line.strip())
        if header:
            tool = os.path.basename(header.group(1))
            found[tool] = []
            continue
        item = re.match(r"\.\. (ERROR|WARNING) \((\w+)\): (.*)", line)
        if item and tool:
            found[tool].append(item.groups())
    return found


@pytest.fixture(scope="module")
def lint(suite):
    proc = subprocess.run([_planemo(), "lint", "--report_level", "warn", str(suite)], capture_output=True,
                          text=True, timeout=600, cwd=str(suite))
    return _parse_lint(proc.stdout + proc.stderr), proc


def _tools(suite):
    import lxml.etree as ET
    return {action_id: ET.parse(str(suite / f"qiime2__aam__{action_id}.xml")).getroot()
            for action_id in PLUGIN.actions}


def test_every_action_is_a_tool_with_one_test_per_example(suite):
    assert sorted(p.name for p in suite.glob("*.xml")) == sorted(f"qiime2__aam__{a}.xml" for a in PLUGIN.actions)
    for action_id, tool in _tools(suite).items():
        action = PLUGIN.actions[action_id]
        tests = tool.find("tests").findall("test")
        assert len(tests) == len(action.examples) >= 1, action_id
        outputs = set(action.signature.outputs)
        for test in tests:
            # one action per example: the test checks this tool's outputs and nothing else
            assert {o.get("name") for o in test.iter("output")} == outputs, action_id
            for param in test.iter("param"):
                if param.get("ftype"):  # a data input: the file q2galaxy wrote from the example's factory
                    assert (suite / "test-data" / param.get("value")).is_file(), (action_id, param.get("value"))


def test_planemo_lint_finds_nothing_beyond_the_template(lint):
    found, proc = lint
    assert set(found) == {f"qiime2__aam__{a}.xml" for a in PLUGIN.actions}, proc.stdout[-3000:] + proc.stderr
    unexpected = []
    for tool, items in sorted(found.items()):
        for level, code, message in items:
            if level == "ERROR" and code in TEMPLATE_ERRORS:
                continue
            if level == "WARNING" and code == "TestsCaseValidation" and TEMPLATE_WARNING.search(message):
                continue
            unexpected.append(f"{tool}: {level} ({code}): {message}")
    assert not unexpected, "planemo lint:\n" + "\n".join(unexpected)
    # the parser did read the report: the template's own errors are there, on the model input of summarize
    assert {c for _, c, _ in found["qiime2__aam__summarize.xml"]} == TEMPLATE_ERRORS


def _is_choices(spec):
    predicate = getattr(spec.qiime_type, "predicate", None)
    return predicate is not None and predicate.name == "Choices"


def test_every_parameter_galaxy_shows_has_its_help_text(suite):
    for action_id, tool in _tools(suite).items():
        helps = [el.get("help") for el in tool.find("inputs").iter() if el.get("help")]
        sig = PLUGIN.actions[action_id].signature
        for name, spec in {**sig.inputs, **sig.parameters}.items():
            assert spec.has_description() and spec.description.strip(), (action_id, name)
            if _is_choices(spec):
                continue  # q2galaxy 2022.11.1 writes no help on its select lists (the choices are the labels)
            assert any(spec.description in h for h in helps), (action_id, name, "description not in the tool")


def test_list_parameter_categorical_columns_explains_its_entries(suite):
    for action_id in ("fit_regressor", "fit_classifier"):
        tool = _tools(suite)[action_id]
        repeat = next(r for r in tool.iter("repeat") if r.get("name") == "categorical_columns")
        assert "one name per entry" in repeat.get("help"), action_id
        assert repeat.get("help").startswith("[optional]"), action_id
        # Galaxy shows each entry as a text box inside the repeat
        assert [p.get("name") for p in repeat.iter("param")] == ["element"], action_id
