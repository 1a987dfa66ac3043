"""The visualizations, opened the way QIIME 2 View shows them: their index.html in a real (headless) Chromium.

Each page is served over HTTP from the .qzv's data/ folder and must load without a JavaScript error or a failed
request, show every image it references, and its links (PNG, SVG, TSV, JSON, TensorBoard logs) must lead to files
of that kind; tables must have rows, and the metrics table must match the metrics.tsv offered for download.
Pages: the model card (`summarize`) of a pretrained base, a regressor and a classifier; `evaluate` for regression
and classification, each with and without a second model; the Emperor plot of `embed`'s PCoA; the page of
`feature-importance`. A screenshot of
every page is kept as a test artifact (printed with -rA; the folder is $AAM_TEST_ARTIFACTS, or artifacts/ beside
the session's temporary directories).

The models are the tiny ones the usage examples build (q2_aam._examples), made once per session.
"""
import csv
import functools
import io
import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from tests.chromium import Chromium, find_chromium
from tests.conftest import locked, require, shared_dir

PAGES = ["summarize-pretrained", "summarize-regressor", "summarize-classifier", "evaluate-regression",
         "evaluate-regression-two-models", "evaluate-classification", "evaluate-classification-two-models",
         "evaluate-crossval-two-models", "emperor", "importance"]
# the figures each page must show (besides the QIIME 2 logo of the page header)
FIGURES = {
    "summarize-pretrained": {"training-curves.png", "validation/distance_fit_best.png"},
    "summarize-regressor": {"training-curves.png", "validation/pred_vs_actual_best.png"},
    "summarize-classifier": {"training-curves.png", "validation/confusion_matrix_best.png"},
    "evaluate-regression": {"predicted-vs-actual.png"},
    "evaluate-regression-two-models": {"predicted-vs-actual.png"},
    "evaluate-classification": {"confusion-matrix.png"},
    "evaluate-classification-two-models": {"confusion-matrix.png", "confusion-matrix-2.png"},
    # classify-samples' page (tests/conftest.py crossval_outputs): evaluate with the folds
    "evaluate-crossval-two-models": {"confusion-matrix.png", "confusion-matrix-2.png", "per-fold.png"},
    "emperor": set(),
    "importance": {"importance.png"},
}
# the kinds of files each kind of page offers
DOWNLOADS = {"summarize": {".png", ".svg", ".tsv", ".zip", ".json"}, "evaluate": {".png", ".svg", ".tsv"},
             "emperor": set(), "importance": {".png", ".svg", ".tsv"}}
# Emperor builds its plot after the page has loaded, inside an iframe: it is drawn once the WebGL canvas exists
# and the point counter ("34 / 34 visible") is shown
EMPEROR_DRAWN = """(() => {
  const frame = document.querySelector("iframe");
  const doc = frame && frame.contentDocument;
  return Boolean(doc && doc.body && doc.querySelector("canvas") && /\\d+ \\/ \\d+ visible/.test(doc.body.innerText));
})()"""
EMPEROR_COUNTER = """document.querySelector("iframe").contentDocument.body.innerText.match(/(\\d+) \\/ (\\d+) visible/)
  .slice(1).map(Number)"""


# ---- the pages ------------------------------------------------------------------------------------------------------
def _build_visualizations(directory):
    from qiime2.plugins import aam, sample_classifier

    from q2_aam import _examples as E
    data = E.example_inputs()
    days, body_site = data["metadata"].get_column(E.DAYS), data["metadata"].get_column("body-site")
    made = {}
    for kind in ("pretrained", "regressor", "classifier"):
        made[f"summarize-{kind}"], = aam.visualizers.summarize(model=E.tiny_model(kind))
    made["evaluate-regression"], = aam.visualizers.evaluate(predictions=E.tiny_regression_predictions(),
                                                            truth=days)
    held_out = E.held_out_regression_predictions()
    made["evaluate-regression-two-models"], = aam.visualizers.evaluate(
        predictions=held_out["aam"], truth=days, other_predictions=held_out["random_forest"], name="AAM",
        other_name="random forest")
    predictions, probabilities = aam.methods.predict_classification(
        model=E.tiny_model("classifier"), table=data["table"], sequences=data["sequences"], num_threads=1)
    made["evaluate-classification"], = aam.visualizers.evaluate(predictions=predictions,
                                                                probabilities=probabilities, truth=body_site)
    forest, _ = sample_classifier.methods.fit_classifier(table=data["table"], metadata=body_site, n_estimators=20,
                                                         random_state=0, n_jobs=1)
    rf_predictions, rf_probabilities = sample_classifier.methods.predict_classification(
        table=data["table"], sample_estimator=forest, n_jobs=1)
    made["evaluate-classification-two-models"], = aam.visualizers.evaluate(
        predictions=predictions, probabilities=probabilities, truth=body_site, other_predictions=rf_predictions,
        other_probabilities=rf_probabilities, name="AAM", other_name="random forest")
    made["importance"] = E.tiny_importance()[2]
    for name, visualization in made.items():
        visualization.save(str(directory / f"{name}.qzv"))


@pytest.fixture(scope="module")
def visualizations(tmp_path_factory, crossval_outputs):
    """name -> .qzv of every page but Emperor's, built once per session (shared by the xdist workers)."""
    directory = shared_dir(tmp_path_factory, "aam-browser-visualizations")
    with locked(str(directory) + ".lock"):
        if not (directory / "done").exists():
            _build_visualizations(directory)
            (directory / "done").touch()
    pages = {name: str(directory / f"{name}.qzv") for name in PAGES if name != "emperor"}
    pages["evaluate-crossval-two-models"] = crossval_outputs["visualization"]
    return pages


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = os.environ.get("AAM_TEST_ARTIFACTS")
    directory = (os.path.join(root, "browser") if root else
                 str(shared_dir(tmp_path_factory, "artifacts") / "browser"))
    os.makedirs(directory, exist_ok=True)
    return directory


# ---- a web server and a browser -------------------------------------------------------------------------------------
class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        # a browser asks every server for /favicon.ico; QIIME 2 View has its own, so this one answers "nothing"
        if self.path == "/favicon.ico":
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(folder, base URL) of a web server on a free port of this machine, serving the folder."""
    root = tmp_path_factory.mktemp("pages")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = find_chromium()
    if executable is None:
        require("chromium (the headless browser these tests drive)",
                "`make setup` installs it as root: apt-get install --no-install-recommends chromium")
    with Chromium(executable, str(tmp_path_factory.mktemp("chromium"))) as chromium:
        yield chromium


def _serve(qzv, root, name):
    """Unpack the .qzv's data/ folder into root/name (what QIIME 2 View serves)."""
    with zipfile.ZipFile(qzv) as zf:
        for member in zf.namelist():
            parts = member.split("/", 2)
            if len(parts) == 3 and parts[1] == "data" and parts[2] and not member.endswith("/"):
                target = root / name / parts[2]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(member))
    return f"{name}/index.html"


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy: it is local


def _fetch(url):
    try:
        with _OPENER.open(url, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def _tsv_rows(data):
    return list(csv.reader(io.StringIO(data.decode("utf-8")), delimiter="\t"))


def _check_file(path, data):
    """Why `data` is not a file of the kind its name says, or None."""
    ext = os.path.splitext(path)[1]
    if ext == ".png" and not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "not a PNG image"
    if ext == ".svg" and b"<svg" not in data[:4096]:
        return "not an SVG image"
    if ext == ".tsv":
        rows = _tsv_rows(data)
        if len(rows) < 2 or len(rows[0]) < 2 or len({len(r) for r in rows}) != 1:
            return f"not a table: {len(rows)} rows of {sorted({len(r) for r in rows})} fields"
    if ext == ".zip":
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            if zf.testzip() is not None:
                return "a damaged zip file"
            if not any("events.out.tfevents." in n for n in zf.namelist()):
                return "holds no TensorBoard event file"
    if ext == ".json":
        json.loads(data)
    return None if data else "empty"


# ---- the test -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PAGES)
def test_page_in_a_browser(name, browser, request, visualizations, server, artifacts, record_property):
    root, base = server
    if name == "emperor":
        plot = request.getfixturevalue("emperor_plot")
        qzv, ready = plot["plot"], EMPEROR_DRAWN
    else:
        qzv, ready = visualizations[name], None
    page = f"{base}/{_serve(qzv, root, name)}"
    screenshot = os.path.join(artifacts, f"{name}.png")
    report = browser.open(page, screenshot=screenshot, ready=ready,
                          values={"counter": EMPEROR_COUNTER} if name == "emperor" else None)
    record_property("screenshot", screenshot)
    print(f"{name}: screenshot {screenshot}")

    # it loaded without an error of any kind
    assert not report.problems(), f"{name} ({page}):\n" + "\n".join(report.problems())
    assert report.title and "q2-" in report.title, report.title

    # every image it references loaded (problems() checked that each decoded), and its figures are among them
    prefix = page.rsplit("/", 1)[0] + "/"
    shown = {i["src"][len(prefix):] for i in report.images if i["src"].startswith(prefix)}
    assert FIGURES[name] <= shown, (name, sorted(shown))

    # every link and resource of this page resolves to a file of its kind; no resource comes from elsewhere
    kind = name.split("-")[0]
    local = [u for u in report.links + report.scripts + report.stylesheets + [i["src"] for i in report.images]
             if u.startswith(base)]
    for url in sorted(set(local)):
        status, data = _fetch(url)
        path = urllib.parse.urlparse(url).path
        assert status == 200, (url, status)
        assert _check_file(path, data) is None, (url, _check_file(path, data))
    # a visualization must work offline: nothing it loads comes from another server
    external = [u for u in report.requested if not u.startswith((base, "data:", "blob:", "about:"))]
    assert not external, (name, external)
    offered = {os.path.splitext(urllib.parse.urlparse(u).path)[1] for u in report.links if u.startswith(base)}
    assert DOWNLOADS[kind] <= offered, (name, sorted(offered))

    # tables have rows; the metrics shown are the metrics offered as TSV
    assert all(rows >= 2 for rows in report.tables), (name, report.tables)
    if kind == "summarize":
        assert len(report.tables) >= 4, report.tables  # model, data, best-epoch metrics, hyperparameters
        assert "Hyperparameters" in report.text and "seed used" in report.text
    if kind == "importance":
        # the groups shown are the groups offered as TSV
        assert report.tables == [len(_tsv_rows(_fetch(f"{prefix}importance-per-group.tsv")[1]))], report.tables
    if kind == "evaluate":
        # the metrics, then every metric with its interval (and, for two models, their paired comparison): the
        # tables offered as TSV
        files = ["metrics.tsv", "intervals.tsv"] + (["comparison.tsv"] if name.endswith("two-models") else []) + \
            (["per-fold.tsv"] if "crossval" in name else [])
        expected = [len(_tsv_rows(_fetch(f"{prefix}{f}")[1])) for f in files]
        assert report.tables == expected, (report.tables, expected)
        assert "95% intervals" in report.text
        if name.endswith("two-models"):
            assert "AAM" in report.text and "random forest" in report.text

    # the screenshot shows a page, not a blank
    from PIL import Image
    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert pixels.shape[1] == 1280 and pixels.shape[0] >= 600, pixels.shape
    assert pixels.std() > 10, f"{screenshot} is nearly one colour"
    if name == "emperor":
        # Emperor counted every sample as a drawn point, and WebGL drew them (red: Emperor's default colour)
        visible, total = report.values["counter"]
        assert visible == total == 34, (visible, total)
        red = (pixels[..., 0] > 200) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
        assert red.sum() > 34 * 20, f"{screenshot}: the points are not drawn ({red.sum()} red pixels)"
