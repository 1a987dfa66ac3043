"""Usage examples of every q2-aam action (QIIME 2 Usage API).

They show in ``qiime aam <action> --help``, ``--example-data`` writes their inputs, the test suite executes them,
and q2galaxy turns them into Galaxy tests. The inputs are the Moving Pictures tutorial files bundled inside the
package (``q2_aam/assets/example-data``), so the examples never need the network or a particular working
directory. The models are tiny (16-wide, one layer, two epochs) so every example runs in seconds on a CPU; real
models keep the defaults.
"""
import os

import qiime2

EXAMPLE_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "example-data")

#: tiny models: each example trains in a few seconds on one CPU thread
TINY = dict(embedding_dim=16, attention_heads=2, attention_layers=1, token_limit=32, max_bp=48, batch_size=8,
            epochs=2, num_threads=1)
_TINY_NOTE = ("The tiny settings (--p-embedding-dim 16, --p-attention-layers 1, --p-epochs 2, ...) make this "
              "example run in seconds; leave them at their defaults for real models.")


def example_path(name):
    """Absolute path of a bundled example file."""
    return os.path.join(EXAMPLE_DATA, name)


def _artifact(name):
    def factory():
        return qiime2.Artifact.load(example_path(name))
    return factory


def _metadata():
    return qiime2.Metadata.load(example_path("sample-metadata.tsv"))


def _inputs(use):
    table = use.init_artifact("table", _artifact("table.qza"))
    sequences = use.init_artifact("rep_seqs", _artifact("rep-seqs.qza"))
    return table, sequences


def _aam(use, action, inputs, outputs):
    return use.action(use.UsageAction(plugin_id="aam", action_id=action), use.UsageInputs(**inputs),
                      use.UsageOutputNames(**outputs))


def _pretrain(use, table, sequences):
    tree = use.init_artifact("rooted_tree", _artifact("rooted-tree.qza"))
    model, = _aam(use, "pretrain", dict(table=table, sequences=sequences, phylogeny=tree, **TINY),
                  dict(model="pretrained_model"))
    return model


def _days(use):
    md = use.init_metadata("sample_metadata", _metadata)
    return md, use.get_metadata_column("days", "days-since-experiment-start", md)


def _regressor(use, table, sequences, days):
    model, = _aam(use, "fit_regressor", dict(table=table, metadata=days, sequences=sequences, **TINY),
                  dict(model="regressor"))
    return model


def _classifier(use, table, sequences):
    md = use.init_metadata("sample_metadata", _metadata)
    body_site = use.get_metadata_column("body_site", "body-site", md)
    model, = _aam(use, "fit_classifier", dict(table=table, metadata=body_site, sequences=sequences, **TINY),
                  dict(model="classifier"))
    return model


def pretrain_unifrac(use):
    use.comment("Pretrain a base model whose sample embeddings reproduce the unweighted UniFrac distances "
                "computed from the tree, while it learns to fill in masked nucleotides of the ASV sequences. "
                + _TINY_NOTE)
    table, sequences = _inputs(use)
    model = _pretrain(use, table, sequences)
    model.assert_output_type("AAMModel[AAMPretrained]")


def fit_regressor_pretrained(use):
    use.comment("Fine-tune a pretrained base to predict a numeric column, keeping the base frozen (only the "
                "prediction layers learn) and keeping each subject's samples on one side of the validation "
                "split. " + _TINY_NOTE)
    table, sequences = _inputs(use)
    pretrained = _pretrain(use, table, sequences)
    md, days = _days(use)
    model, = _aam(use, "fit_regressor",
                  dict(table=table, metadata=days, sequences=sequences, pretrained=pretrained, freeze_base=True,
                       sample_metadata=md, group_column="subject", **TINY),
                  dict(model="regressor"))
    model.assert_output_type("AAMModel[AAMRegressor]")


def fit_classifier_body_site(use):
    use.comment("Train a classifier of body site from scratch (no pretrained base). " + _TINY_NOTE)
    table, sequences = _inputs(use)
    model = _classifier(use, table, sequences)
    model.assert_output_type("AAMModel[AAMClassifier]")


def predict_regression_days(use):
    use.comment("Train a regressor, then predict its target for the samples of a table (here the same table; "
                "in practice, new samples). " + _TINY_NOTE)
    table, sequences = _inputs(use)
    _, days = _days(use)
    model = _regressor(use, table, sequences, days)
    predictions, = _aam(use, "predict_regression", dict(model=model, table=table, sequences=sequences,
                                                        num_threads=1),
                        dict(predictions="predictions"))
    predictions.assert_output_type("SampleData[RegressorPredictions]")


def predict_classification_body_site(use):
    use.comment("Train a classifier, then predict the class of each sample and the probability of every class. "
                + _TINY_NOTE)
    table, sequences = _inputs(use)
    model = _classifier(use, table, sequences)
    predictions, probabilities = _aam(use, "predict_classification",
                                      dict(model=model, table=table, sequences=sequences, num_threads=1),
                                      dict(predictions="predictions", probabilities="probabilities"))
    predictions.assert_output_type("SampleData[ClassifierPredictions]")
    probabilities.assert_output_type("SampleData[Probabilities]")


def embed_pretrained(use):
    use.comment("Embed samples with a pretrained model: a PCoA of the embeddings (view it with `qiime emperor "
                "plot`) and the distances between samples the model predicts. " + _TINY_NOTE)
    table, sequences = _inputs(use)
    model = _pretrain(use, table, sequences)
    embedding, distances = _aam(use, "embed", dict(model=model, table=table, sequences=sequences,
                                                   num_threads=1),
                                dict(embedding="embedding", distance_matrix="distance_matrix"))
    embedding.assert_output_type("PCoAResults")
    distances.assert_output_type("DistanceMatrix")


def summarize_regressor(use):
    use.comment("A model card: data, hyperparameters, training curves, validation at the best epoch, and the "
                "history and TensorBoard logs for download. " + _TINY_NOTE)
    table, sequences = _inputs(use)
    _, days = _days(use)
    model = _regressor(use, table, sequences, days)
    _aam(use, "summarize", dict(model=model), dict(visualization="model_summary"))


def evaluate_regression(use):
    use.comment("Compare predictions with the true values of the column. " + _TINY_NOTE)
    table, sequences = _inputs(use)
    _, days = _days(use)
    model = _regressor(use, table, sequences, days)
    predictions, = _aam(use, "predict_regression", dict(model=model, table=table, sequences=sequences,
                                                        num_threads=1),
                        dict(predictions="predictions"))
    _aam(use, "evaluate", dict(predictions=predictions, truth=days), dict(visualization="evaluation"))


def evaluate_against_sample_classifier(use):
    use.comment("Hold out a test set with q2-sample-classifier, train AAM and a random forest on the rest, and "
                "compare both on the held-out samples. " + _TINY_NOTE)
    table, sequences = _inputs(use)
    _, days = _days(use)
    training_table, test_table, _, _ = use.action(
        use.UsageAction(plugin_id="sample_classifier", action_id="split_table"),
        use.UsageInputs(table=table, metadata=days, test_size=0.25, random_state=0, stratify=False),
        use.UsageOutputNames(training_table="training_table", test_table="test_table",
                             training_targets="training_targets", test_targets="test_targets"))
    model, = _aam(use, "fit_regressor", dict(table=training_table, metadata=days, sequences=sequences, **TINY),
                  dict(model="regressor"))
    aam_predictions, = _aam(use, "predict_regression", dict(model=model, table=test_table, sequences=sequences,
                                                            num_threads=1),
                            dict(predictions="aam_predictions"))
    estimator, _ = use.action(
        use.UsageAction(plugin_id="sample_classifier", action_id="fit_regressor"),
        use.UsageInputs(table=training_table, metadata=days, n_estimators=20, random_state=0),
        use.UsageOutputNames(sample_estimator="random_forest", feature_importance="feature_importance"))
    rf_predictions, = use.action(
        use.UsageAction(plugin_id="sample_classifier", action_id="predict_regression"),
        use.UsageInputs(table=test_table, sample_estimator=estimator),
        use.UsageOutputNames(predictions="rf_predictions"))
    _aam(use, "evaluate", dict(predictions=aam_predictions, truth=days, other_predictions=rf_predictions,
                               name="AAM", other_name="random forest"),
         dict(visualization="comparison"))


EXAMPLES = {
    "pretrain": {"pretrain_unifrac": pretrain_unifrac},
    "fit_regressor": {"fit_regressor_pretrained_frozen": fit_regressor_pretrained},
    "fit_classifier": {"fit_classifier_body_site": fit_classifier_body_site},
    "predict_regression": {"predict_regression_days": predict_regression_days},
    "predict_classification": {"predict_classification_body_site": predict_classification_body_site},
    "embed": {"embed_pretrained": embed_pretrained},
    "summarize": {"summarize_regressor": summarize_regressor},
    "evaluate": {"evaluate_regression": evaluate_regression,
                 "evaluate_against_sample_classifier": evaluate_against_sample_classifier},
}
