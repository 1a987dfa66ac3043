"""Emperor: `qiime emperor plot` draws the PCoA that `qiime aam embed` writes, coloured by the sample metadata.

The plot itself is made once per session by the `emperor_plot` fixture (tests/conftest.py) through the real
`qiime` command line; tests/test_browser.py opens it in a browser.
"""
import json
import re
import zipfile

import numpy as np
import pandas as pd
import qiime2
import skbio


def _member(path, name):
    with zipfile.ZipFile(path) as zf:
        return zf.read(next(n for n in zf.namelist() if n.split("/", 1)[1] == name))


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {n.split("/", 1)[1] for n in zf.namelist()}


def test_emperor_plots_the_embedding_with_the_sample_metadata(emperor_plot):
    plot = qiime2.Visualization.peek(emperor_plot["plot"])
    assert str(plot.type) == "Visualization"
    action = _member(emperor_plot["plot"], "provenance/action/action.yaml").decode()
    assert "plugin: !ref 'environment:plugins:emperor'" in action and "action: plot" in action
    # the plot's input is the embedding made by q2-aam's embed
    embedding = qiime2.Artifact.load(emperor_plot["embedding"])
    assert str(embedding.type) == "PCoAResults"
    assert f"pcoa: {embedding.uuid}" in action

    html = _member(emperor_plot["plot"], "data/emperor.html").decode()
    data = json.loads(re.search(r"^\s*var data = (\{.*\});\s*$", html, re.M).group(1))
    ordination = embedding.view(skbio.OrdinationResults)
    decomposition = data["plot"]["decomposition"]
    # every embedded sample is a point at the coordinates embed computed (Emperor rescales them all by one
    # factor to fit its view), with its metadata row
    assert decomposition["sample_ids"] == list(ordination.samples.index)
    shown = np.asarray(decomposition["coordinates"])
    computed = ordination.samples.iloc[:, :shown.shape[1]].to_numpy()
    scale = (shown * computed).sum() / (computed * computed).sum()
    assert scale > 0 and np.allclose(shown, scale * computed, rtol=1e-6, atol=1e-9)
    metadata = pd.read_csv(emperor_plot["metadata"], sep="\t", index_col=0, comment=None, dtype=str).iloc[1:]
    headers = data["plot"]["metadata_headers"]
    assert {"body-site", "subject", "days-since-experiment-start"} <= set(headers)
    rows = {row[0]: dict(zip(headers, row)) for row in data["plot"]["metadata"]}
    assert set(rows) == set(decomposition["sample_ids"])
    for sample, row in rows.items():
        assert row["body-site"] == metadata.loc[sample, "body-site"], sample


def test_emperor_plot_carries_the_javascript_it_loads(emperor_plot):
    """Emperor's page loads require.js, jQuery, three.js and more from vendor/js; Debian's python3-emperor
    leaves them out (its plots open blank), so `make setup` puts PyPI's emperor into .venv."""
    members = _members(emperor_plot["plot"])
    html = _member(emperor_plot["plot"], "data/emperor.html").decode()
    # <script src="./vendor/js/x.js"> and the require.js paths './vendor/js/x' (without .js)
    referenced = {path if path.endswith(".js") else path + ".js"
                  for path in re.findall(r"""["']\./(vendor/js/[^"']+)["']""", html)}
    assert {"vendor/js/require-2.1.22.min.js", "vendor/js/three.min.js"} <= referenced, sorted(referenced)
    missing = sorted(p for p in referenced if "data/" + p not in members)
    assert not missing, (f"the Emperor plot lacks {missing}: this emperor package ships without its JavaScript "
                         "(Debian's python3-emperor); `make setup` installs emperor from PyPI into .venv")
