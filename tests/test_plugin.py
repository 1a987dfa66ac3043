"""The q2-aam plugin through QIIME 2's Python API (`qiime2.plugins.aam`), on the bundled real data slices.

Models are trained once per test session (shared between pytest-xdist workers through a locked directory) with
tiny settings: pretrain -> fit_regressor (pretrained, frozen base, covariates, grouped split) and fit_classifier.
"""
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import qiime2
import skbio
from qiime2.plugin import ValidationError
from qiime2.sdk import PluginManager
from qiime2.sdk.usage import ExecutionUsage

from aam import options as O
from aam.errors import AAMInputError
from tests.conftest import MP, locked, shared_dir

TINY = dict(asv_encoder="none", embedding_dim=16, attention_heads=2, attention_layers=1, token_limit=32, max_bp=48,
            batch_size=4, epochs=2, num_threads=1)
DAYS = "days-since-experiment-start"

PM = PluginManager()
PLUGIN = PM.plugins["aam"]
EXAMPLES = [(action_id, name) for action_id, action in sorted(PLUGIN.actions.items())
            for name in sorted(action.examples)]


def _aam():
    from qiime2.plugins import aam
    return aam


# ---- shared inputs and models --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    return {"table": qiime2.Artifact.load(os.path.join(MP, "table.qza")),
            "sequences": qiime2.Artifact.load(os.path.join(MP, "rep-seqs.qza")),
            "tree": qiime2.Artifact.load(os.path.join(MP, "rooted-tree.qza")),
            "taxonomy": qiime2.Artifact.load(os.path.join(MP, "taxonomy.qza")),
            "metadata": qiime2.Metadata.load(os.path.join(MP, "sample-metadata.tsv"))}


#: the shared directory (`tests.conftest.shared_dir`) of the tiny models, which test_plugin_importance reads too
MODELS_DIR = "aam-plugin-models"


def train_models(directory, data):
    aam = _aam()
    md = data["metadata"]
    pre, = aam.methods.pretrain(table=data["table"], sequences=data["sequences"], phylogeny=data["tree"], **TINY)
    reg, = aam.methods.fit_regressor(table=data["table"], metadata=md.get_column(DAYS), sequences=data["sequences"],
                                     pretrained=pre, freeze_base=True, sample_metadata=md,
                                     categorical_columns=["body-site"], group_column="subject", **TINY)
    cls, = aam.methods.fit_classifier(table=data["table"], metadata=md.get_column("body-site"),
                                      sequences=data["sequences"], class_weights="balanced", **TINY)
    for name, art in (("pretrained", pre), ("regressor", reg), ("classifier", cls)):
        art.save(str(directory / f"{name}.qza"))


@pytest.fixture(scope="module")
def models(tmp_path_factory, data):
    directory = shared_dir(tmp_path_factory, MODELS_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    with locked(str(directory) + ".lock"):
        if not (directory / "done").exists():
            train_models(directory, data)
            (directory / "done").touch()
    return {name: qiime2.Artifact.load(str(directory / f"{name}.qza"))
            for name in ("pretrained", "regressor", "classifier")}


@pytest.fixture(scope="module")
def regression_predictions(models, data):
    preds, = _aam().methods.predict_regression(model=models["regressor"], table=data["table"],
                                               sequences=data["sequences"], sample_metadata=data["metadata"],
                                               num_threads=1)
    return preds


@pytest.fixture(scope="module")
def classification_predictions(models, data):
    return _aam().methods.predict_classification(model=models["classifier"], table=data["table"],
                                                 sequences=data["sequences"], num_threads=1, batch_size=8)


def _files(result):
    """Relative path -> absolute path of every file of a model artifact's data directory."""
    from q2_aam._format import AAMModelDirFmt
    root = str(result.view(AAMModelDirFmt))
    out = {}
    for folder, _, names in os.walk(root):
        for n in names:
            out[os.path.relpath(os.path.join(folder, n), root)] = os.path.join(folder, n)
    return out


def _action_yaml(result, tmp_path):
    path = str(tmp_path / "result.qza")
    result.save(path)
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith("/provenance/action/action.yaml")
                    and n.count("/") == 3)
        return zf.read(name).decode()


# ---- registration --------------------------------------------------------------------------------------------------
def test_importing_the_plugin_does_not_import_torch_or_the_engine():
    code = ("import sys, q2_aam.plugin_setup\n"
            "heavy = [m for m in ('torch', 'aam.api', 'aam.models.sequence_encoder', 'tensorboard')\n"
            "         if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_types_formats_and_artifact_classes_are_registered():
    from q2_aam._format import AAMModelDirFmt
    for name in ("AAMModel[AAMPretrained]", "AAMModel[AAMRegressor]", "AAMModel[AAMClassifier]"):
        semantic_type = qiime2.sdk.util.parse_type(name)
        assert PM.get_directory_format(semantic_type) is AAMModelDirFmt
    assert set(PLUGIN.types) == {"AAMModel[AAMPretrained]", "AAMModel[AAMRegressor]", "AAMModel[AAMClassifier]",
                                 "FeatureData[AAMImportance]"}
    assert set(PLUGIN.type_fragments) == {"AAMModel", "AAMPretrained", "AAMRegressor", "AAMClassifier",
                                          "AAMImportance"}
    # no name of another plugin is redefined (a clash would break every qiime command)
    assert not {"Regressor", "Classifier", "Probabilities"} & set(PLUGIN.type_fragments)
    assert "AAMModelDirFmt" in PLUGIN.formats and "AAMWeightsFormat" in PLUGIN.formats


def test_actions_are_described_cited_and_have_examples():
    expected = {"pretrain", "fit_regressor", "fit_classifier", "predict_regression", "predict_classification",
                "embed", "embed_features", "summarize", "evaluate", "classify_samples", "regress_samples",
                "feature_importance", "summarize_importance"}
    assert set(PLUGIN.actions) == expected
    for action_id, action in PLUGIN.actions.items():
        sig = action.signature
        # a visualizer's single output cannot carry a description in QIIME 2
        outputs = {} if action.type == "visualizer" else sig.outputs
        specs = {**sig.inputs, **sig.parameters, **outputs}
        undocumented = [n for n, spec in specs.items() if not spec.has_description()]
        assert not undocumented, (action_id, undocumented)
        assert action.examples, action_id
        assert action.citations, action_id
        # Galaxy readiness: no free-form paths or output directories as parameters
        assert not [n for n in sig.parameters if re.search(r"path|dir|file", n)], action_id
    from q2_aam.plugin_setup import citations
    for key in ("cantrell2024aam", "lozupone2005unifrac", "vaswani2017attention", "paszke2019pytorch"):
        assert citations[key] in PLUGIN.actions["pretrain"].citations, key
    assert citations["bokulich2018q2sampleclassifier"] in PLUGIN.actions["predict_regression"].citations


def test_parameters_come_from_the_engine_option_table():
    from q2_aam._params import CLASSIFICATION_ONLY, REGRESSION_ONLY, q2_render
    cases = {"pretrain": ("pretrain", ()), "fit_regressor": ("train", CLASSIFICATION_ONLY),
             "fit_classifier": ("train", REGRESSION_ONLY), "predict_regression": ("predict", ()),
             "embed": ("predict", ()), "feature_importance": ("predict", ())}
    for action_id, (command, excluded) in cases.items():
        params = PLUGIN.actions[action_id].signature.parameters
        for option in O.options_for(command, "plugin"):
            if option.name in excluded:
                assert option.name not in params, (action_id, option.name)
                continue
            spec = params[option.name]
            assert spec.default == option.default, (action_id, option.name)
            assert spec.description.startswith(q2_render(option.help)), (action_id, option.name)
            assert "{opt:" not in spec.description and "{input:" not in spec.description
        cli_only = [o.name for o in O.OPTIONS if not o.plugin]
        assert not set(cli_only) & set(params), action_id
    device = PLUGIN.actions["fit_regressor"].signature.parameters["device"]
    assert device.qiime_type.predicate.to_ast()["choices"] == ["auto", "cpu", "cuda"]
    # optional options (default None) stay optional
    assert PLUGIN.actions["pretrain"].signature.parameters["rarefy_depth"].default is None


def test_engine_messages_name_options_in_each_front_ends_spelling():
    from q2_aam._params import Q2, q2_render
    template = "{opt:freeze_base} needs {input:pretrained} and {input:tree}"
    assert q2_render(template) == "--p-freeze-base needs --i-pretrained and --i-phylogeny (Phylogeny[Rooted])"
    err = AAMInputError(template)
    assert str(err) == "--freeze-base needs --pretrained-encoder and --tree"
    assert err.render(Q2) == q2_render(template)
    assert q2_render("--sequences x.fasta and {x: 1}") == "--sequences x.fasta and {x: 1}"  # nothing else changes


# ---- methods -------------------------------------------------------------------------------------------------------
def test_pretrained_model_artifact(models):
    pre = models["pretrained"]
    assert str(pre.type) == "AAMModel[AAMPretrained]"
    files = _files(pre)
    assert {"model.pt", "config.json", "history.tsv"} <= set(files)
    assert any(f.startswith("tensorboard/events.out.tfevents.") for f in files)
    assert {"plots/distance_fit_best.png", "plots/distance_fit_best.svg"} <= set(files)
    with open(files["config.json"]) as fh:
        config = json.load(fh)
    assert config["format"] == "aam-checkpoint" and config["task"] == "pretrain"
    # the seed and device actually used are recorded in the model
    assert config["seed"] == 42 and config["device"] == "cpu"
    assert len(config["training"]["history"]) == TINY["epochs"]
    from aam.checkpoint import Checkpoint
    ckpt = pre.view(Checkpoint)
    assert ckpt.kind == "encoder" and ckpt.model_state


def test_regressor_records_pretraining_freezing_and_covariates(models):
    from aam.checkpoint import Checkpoint
    record = models["regressor"].view(Checkpoint).record
    assert str(models["regressor"].type) == "AAMModel[AAMRegressor]"
    assert record.task == "regression" and record.target.column == DAYS
    assert record.options["freeze_base"] is True and record.pretrained_encoder["objective"] == "unifrac"
    assert record.target.categorical_columns == ["body-site"] and record.options["group_column"] == "subject"


def test_classifier_model(models):
    from q2_aam._model import TrainedModel
    view = models["classifier"].view(TrainedModel)
    assert str(models["classifier"].type) == "AAMModel[AAMClassifier]"
    assert view.record.target.class_labels == ["gut", "left palm", "right palm", "tongue"]
    assert os.path.isfile(view.run_dir.history_file)


def test_provenance_names_the_action_and_its_parameters(models, tmp_path):
    text = _action_yaml(models["regressor"], tmp_path)
    assert "action: fit_regressor" in text
    assert "plugin: !ref 'environment:plugins:aam'" in text
    for line in ("freeze_base: true", "epochs: 2", "group_column: subject", "embedding_dim: 16", "seed: 42",
                 "device: auto"):
        assert re.search(r"-\s+" + re.escape(line) + r"\n", text), line
    assert re.search(r"pretrained: [0-9a-f-]{36}", text)


def test_predict_regression(regression_predictions, data):
    assert str(regression_predictions.type) == "SampleData[RegressorPredictions]"
    series = regression_predictions.view(pd.Series)
    table_ids = set(data["table"].view(pd.DataFrame).index)
    assert set(series.index) <= table_ids and len(series) >= 15
    assert np.isfinite(series.to_numpy(dtype=float)).all()
    # usable as metadata, like q2-sample-classifier's predictions
    assert "prediction" in regression_predictions.view(qiime2.Metadata).columns


def test_predict_classification(classification_predictions, models):
    predictions, probabilities = classification_predictions
    assert str(predictions.type) == "SampleData[ClassifierPredictions]"
    assert str(probabilities.type) == "SampleData[Probabilities]"
    labels = predictions.view(pd.Series)
    probs = probabilities.view(pd.DataFrame)
    assert list(probs.columns) == ["gut", "left palm", "right palm", "tongue"]
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert (probs.idxmax(axis=1).loc[labels.index] == labels).all()


def test_embed(models, data):
    embedding, distances = _aam().methods.embed(model=models["pretrained"], table=data["table"],
                                                sequences=data["sequences"], num_threads=1)
    assert str(embedding.type) == "PCoAResults" and str(distances.type) == "DistanceMatrix"
    ordination = embedding.view(skbio.OrdinationResults)
    dm = distances.view(skbio.DistanceMatrix)
    assert set(ordination.samples.index) == set(dm.ids)
    assert ordination.samples.shape[1] >= 3
    # a regressor's base embeds too
    embedding2, _ = _aam().methods.embed(model=models["regressor"], table=data["table"],
                                         sequences=data["sequences"], num_threads=1)
    assert embedding2.view(skbio.OrdinationResults).samples.shape[0] == ordination.samples.shape[0]


def test_pretrain_taxonomy_objective_from_a_distance_matrix_free_input(data):
    model, = _aam().methods.pretrain(table=data["table"], sequences=data["sequences"], taxonomy=data["taxonomy"],
                                     encoder_type="taxonomy", taxonomy_level=2, validation_fraction=0.0,
                                     **{**TINY, "epochs": 1})
    from aam.checkpoint import Checkpoint
    assert model.view(Checkpoint).record.objective == "taxonomy"


# ---- errors reach the user as one clear message --------------------------------------------------------------------
def _subset_metadata(data, column, values):
    ids = list(data["metadata"].ids)
    frame = pd.DataFrame({column: values(ids)}, index=pd.Index(ids, name="sample-id"))
    return qiime2.Metadata(frame)


def test_error_linear_head_without_pretrained(data):
    with pytest.raises(ValueError, match=r"--p-head linear .*--i-pretrained"):
        _aam().methods.fit_regressor(table=data["table"], metadata=data["metadata"].get_column(DAYS),
                                     sequences=data["sequences"], head="linear", **TINY)


def test_error_single_class(data):
    md = _subset_metadata(data, "constant", lambda ids: ["a"] * len(ids))
    with pytest.raises(ValueError, match=r"'constant' has a single class \('a'\)"):
        _aam().methods.fit_classifier(table=data["table"], metadata=md.get_column("constant"),
                                      sequences=data["sequences"], **TINY)


def test_error_too_few_samples_with_a_value(data):
    md = _subset_metadata(data, "sparse", lambda ids: [1.0, 2.0, 3.0] + [np.nan] * (len(ids) - 3))
    with pytest.raises(ValueError, match=r"only \d sample\(s\) have both reads and a value for 'sparse'"):
        _aam().methods.fit_regressor(table=data["table"], metadata=md.get_column("sparse"),
                                     sequences=data["sequences"], **TINY)


def test_error_missing_samples_names_them_and_the_fix(data):
    ids = list(data["metadata"].ids)
    frame = pd.DataFrame({"y": np.arange(8, dtype=float)}, index=pd.Index(ids[:8], name="sample-id"))
    with pytest.raises(ValueError, match=r"have no row in the metadata: .*--p-missing-samples ignore"):
        _aam().methods.fit_regressor(table=data["table"], metadata=qiime2.Metadata(frame).get_column("y"),
                                     sequences=data["sequences"], **TINY)


def test_error_unknown_covariate_column(data):
    with pytest.raises(ValueError, match=r"--p-categorical-columns: column\(s\) 'sex' are not in the sample "
                                         r"metadata; available columns: .*'body-site'"):
        _aam().methods.fit_regressor(table=data["table"], metadata=data["metadata"].get_column(DAYS),
                                     sequences=data["sequences"], sample_metadata=data["metadata"],
                                     categorical_columns=["sex"], **TINY)


def test_error_covariates_without_metadata_and_target_as_covariate(data):
    with pytest.raises(ValueError, match=r"no sample metadata was given.*--m-sample-metadata-file"):
        _aam().methods.fit_regressor(table=data["table"], metadata=data["metadata"].get_column(DAYS),
                                     sequences=data["sequences"], group_column="subject", **TINY)
    with pytest.raises(ValueError, match="lists the target column"):
        _aam().methods.fit_classifier(table=data["table"], metadata=data["metadata"].get_column("body-site"),
                                      sequences=data["sequences"], sample_metadata=data["metadata"],
                                      categorical_columns=["body-site"], **TINY)


def test_error_unifrac_objective_needs_a_tree_or_matrix(data):
    with pytest.raises(ValueError, match=r"--i-phylogeny.*--i-distance-matrix"):
        _aam().methods.pretrain(table=data["table"], sequences=data["sequences"], **TINY)


def test_error_hashed_ids_without_sequences(data):
    with pytest.raises(ValueError, match=r"not DNA sequences .*--i-sequences"):
        _aam().methods.fit_regressor(table=data["table"], metadata=data["metadata"].get_column(DAYS), **TINY)


# ---- formats, validation, transformers -----------------------------------------------------------------------------
def _exported(models, name, tmp_path):
    directory = tmp_path / name
    models[name].export_data(str(directory))
    return directory


def _flip_tensor_byte(data):
    """Flip one byte in the middle of the largest stored tensor (its CRC no longer matches)."""
    import struct
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = max(zf.infolist(), key=lambda i: i.compress_size)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    at = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def _unsafe_checkpoint(_):
    import torch

    class Payload:
        def __reduce__(self):
            return (print, ("code from the file ran",))
    buf = io.BytesIO()
    torch.save({"format": "aam-checkpoint", "format_version": 2, "model": {}, "record": "{}", "x": Payload()}, buf)
    return buf.getvalue()


CORRUPTIONS = {
    "not-a-zip": ("model.pt", lambda d: b"garbage", r"model.pt is not a PyTorch checkpoint", "min"),
    "truncated": ("model.pt", lambda d: d[: len(d) // 2], r"model.pt is not a PyTorch checkpoint", "min"),
    "flipped-byte": ("model.pt", lambda d: _flip_tensor_byte(d), r"model.pt is damaged: the member .* fails its "
                     r"checksum", "max"),
    "pickled-object": ("model.pt", _unsafe_checkpoint, r"torch.load\(weights_only=True\)", "max"),
    "config-not-json": ("config.json", lambda d: d[:-5], r"config.json is not valid JSON", "min"),
    "config-no-marker": ("config.json", lambda d: d.replace(b'"aam-checkpoint"', b'"other"'),
                         r"no \"format\": \"aam-checkpoint\" marker", "min"),
    "history-ragged": ("history.tsv", lambda d: d + b"1\t2\n", r"history.tsv line \d+ has 2 fields", "min"),
    "png-not-png": ("plots/pred_vs_actual_best.png", lambda d: b"GIF89a" + d[6:], r"not a PNG image", "min"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_format_validation_rejects_a_corrupted_model(models, tmp_path, case):
    from q2_aam._format import AAMModelDirFmt
    member, corrupt, message, level = CORRUPTIONS[case]
    directory = _exported(models, "regressor", tmp_path)
    AAMModelDirFmt(str(directory), mode="r").validate("max")  # intact
    path = directory / member
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(ValidationError, match=message):
        AAMModelDirFmt(str(directory), mode="r").validate(level)
    with pytest.raises(ValidationError, match=message):
        qiime2.Artifact.import_data("AAMModel[AAMRegressor]", str(directory))


def test_tensorboard_logs_are_checked(models, tmp_path):
    from q2_aam._format import AAMModelDirFmt
    directory = _exported(models, "regressor", tmp_path)
    events = next((directory / "tensorboard").glob("events.out.tfevents.*"))
    data = bytearray(events.read_bytes())
    data[30] ^= 0x01
    events.write_bytes(bytes(data))
    with pytest.raises(ValidationError, match=r"TensorBoard log .* checksum"):
        AAMModelDirFmt(str(directory), mode="r").validate("min")


def test_config_and_weights_must_describe_the_same_model(models, tmp_path):
    from q2_aam._format import AAMModelDirFmt
    directory = _exported(models, "regressor", tmp_path)
    shutil.copyfile(_files(models["classifier"])["model.pt"], directory / "model.pt")
    AAMModelDirFmt(str(directory), mode="r").validate("min")
    with pytest.raises(ValidationError, match="config.json and model.pt disagree"):
        AAMModelDirFmt(str(directory), mode="r").validate("max")


def test_semantic_type_must_match_the_task(models, tmp_path):
    directory = _exported(models, "regressor", tmp_path)
    with pytest.raises(ValidationError, match=r"trained for 'regression'.*not an AAMModel\[AAMClassifier\]"):
        qiime2.Artifact.import_data("AAMModel[AAMClassifier]", str(directory))
    art = qiime2.Artifact.import_data("AAMModel[AAMRegressor]", str(directory))
    art.validate("max")


def test_checkpoint_round_trip_and_cli_checkpoint_import(models, tmp_path):
    import torch

    from aam.checkpoint import Checkpoint, load_checkpoint
    ckpt = models["regressor"].view(Checkpoint)
    again = qiime2.Artifact.import_data("AAMModel[AAMRegressor]", ckpt)
    back = again.view(Checkpoint)
    assert back.record.task == "regression"
    assert all(torch.equal(back.model_state[k], v) for k, v in ckpt.model_state.items())
    assert "history.tsv" in _files(again)  # rebuilt from the record's history
    # a checkpoint file written by the aam command line imports with --input-format AAMWeightsFormat
    path = tmp_path / "best_model.pt"
    ckpt.save(str(path))
    imported = qiime2.Artifact.import_data("AAMModel[AAMRegressor]", str(path), view_type="AAMWeightsFormat")
    assert load_checkpoint(_files(imported)["model.pt"]).record.target.column == DAYS


# ---- visualizers ---------------------------------------------------------------------------------------------------
def _viz_files(viz, tmp_path):
    path = str(tmp_path / "viz.qzv")
    viz.save(path)
    with zipfile.ZipFile(path) as zf:
        names = [n.split("/data/", 1)[1] for n in zf.namelist() if "/data/" in n]
        index = next(zf.read(n) for n in zf.namelist() if n.endswith("/data/index.html")).decode()
    return set(names), index


@pytest.mark.parametrize("name", ["pretrained", "classifier"])  # the regressor: CLI test and usage example
def test_summarize_is_a_model_card(models, tmp_path, name):
    viz, = _aam().visualizers.summarize(model=models[name])
    files, index = _viz_files(viz, tmp_path)
    assert {"index.html", "training-curves.png", "training-curves.svg", "history.tsv", "tensorboard-logs.zip",
            "config.json"} <= files
    expected_plot = {"pretrained": "distance_fit_best", "regressor": "pred_vs_actual_best",
                     "classifier": "confusion_matrix_best"}[name]
    assert {f"validation/{expected_plot}.png", f"validation/{expected_plot}.svg"} <= files
    assert "q2templateassets/css/bootstrap.min.css" in files
    for text in ("Hyperparameters", "Data used", "best epoch", "seed used", "device used", "embedding_dim"):
        assert text.lower() in index.lower(), text
    assert 'src="training-curves.png"' in index
    # a predictor's validation score comes with its interval (a pretrained base's loss has none)
    assert ("95% interval" in index) == (name != "pretrained")


def test_evaluate_regression_against_another_model(regression_predictions, data, tmp_path):
    other = qiime2.Artifact.import_data("SampleData[RegressorPredictions]",
                                        regression_predictions.view(pd.Series) * 0.5 + 10)
    viz, = _aam().visualizers.evaluate(predictions=regression_predictions, truth=data["metadata"].get_column(DAYS),
                                       other_predictions=other, name="AAM", other_name="halved",
                                       missing_samples="ignore")
    files, index = _viz_files(viz, tmp_path)
    assert {"predicted-vs-actual.png", "predicted-vs-actual.svg", "metrics.tsv", "per-sample.tsv"} <= files
    assert "AAM" in index and "halved" in index and "R²" in index


def test_evaluate_classification_with_probabilities(classification_predictions, data, tmp_path):
    predictions, probabilities = classification_predictions
    viz, = _aam().visualizers.evaluate(predictions=predictions, probabilities=probabilities,
                                       truth=data["metadata"].get_column("body-site"))
    files, index = _viz_files(viz, tmp_path)
    assert {"confusion-matrix.png", "confusion-matrix.svg", "metrics.tsv"} <= files
    assert "balanced accuracy" in index and "log loss" in index


def test_evaluate_rejects_mismatched_kinds(regression_predictions, classification_predictions, data):
    with pytest.raises(ValueError, match="Are these regression predictions"):
        _aam().visualizers.evaluate(predictions=regression_predictions,
                                    truth=data["metadata"].get_column("body-site"))
    with pytest.raises(ValueError, match="non-numeric values"):
        _aam().visualizers.evaluate(predictions=classification_predictions[0],
                                    truth=data["metadata"].get_column(DAYS))


def test_q2_sample_classifier_visualizers_accept_our_predictions(regression_predictions,
                                                                 classification_predictions, data):
    from qiime2.plugins import sample_classifier
    viz, = sample_classifier.visualizers.scatterplot(predictions=regression_predictions,
                                                     truth=data["metadata"].get_column(DAYS),
                                                     missing_samples="ignore")
    assert viz.type == qiime2.sdk.util.parse_type("Visualization")
    predictions, probabilities = classification_predictions
    viz, = sample_classifier.visualizers.confusion_matrix(predictions=predictions, probabilities=probabilities,
                                                          truth=data["metadata"].get_column("body-site"),
                                                          missing_samples="ignore")


# ---- usage examples ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("action_id,example", EXAMPLES, ids=[f"{a}-{e}" for a, e in EXAMPLES])
def test_usage_example_runs(action_id, example):
    use = ExecutionUsage()
    PLUGIN.actions[action_id].examples[example](use)
    results = use.render()
    assert results, example


# ---- integrity of what the plugin reads ------------------------------------------------------------------------------
def test_damaged_weights_are_refused_when_a_model_is_read(models, tmp_path):
    from q2_aam._format import AAMModelDirFmt
    from q2_aam._transformer import _2 as to_checkpoint
    directory = _exported(models, "regressor", tmp_path)
    path = directory / "model.pt"
    path.write_bytes(_flip_tensor_byte(path.read_bytes()))  # torch.load itself does not notice
    with pytest.raises(AAMInputError, match="do not match the checksum"):
        to_checkpoint(AAMModelDirFmt(str(directory), mode="r"))


def test_summarize_refuses_a_config_that_does_not_describe_the_weights(models, tmp_path):
    from q2_aam._format import AAMModelDirFmt
    from q2_aam._visualizers import summarize
    directory = _exported(models, "regressor", tmp_path)
    shutil.copyfile(_files(models["classifier"])["config.json"], directory / "config.json")
    with pytest.raises(AAMInputError, match="does not describe the weights"):
        summarize(str(tmp_path / "viz"), AAMModelDirFmt(str(directory), mode="r"))


def test_evaluate_refuses_missing_or_non_finite_predictions(data, tmp_path):
    from q2_aam._visualizers import evaluate
    truth = data["metadata"].get_column(DAYS)
    ids = list(truth.to_series().dropna().index[:6])
    broken = pd.Series([1.0, 2.0, float("-inf"), 4.0, float("inf"), 6.0], index=ids)
    with pytest.raises(AAMInputError, match="no finite prediction for 2 sample"):
        evaluate(str(tmp_path / "a"), broken, truth, missing_samples="ignore")
    with pytest.raises(AAMInputError, match="empty for 1 sample"):
        evaluate(str(tmp_path / "c"), broken.replace(float("inf"), float("nan")).replace(float("-inf"), 3.0), truth,
                 missing_samples="ignore")
    sites = data["metadata"].get_column("body-site")
    empty = pd.Series(["gut", "", "tongue"], index=list(sites.to_series().index[:3]))
    with pytest.raises(AAMInputError, match="empty for 1 sample"):
        evaluate(str(tmp_path / "b"), empty, sites, missing_samples="ignore")
