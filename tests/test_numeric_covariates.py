"""Numeric covariates (age, BMI, ...) as predictors for the network and the forest: scaled on the training
samples, a missing value read as the training median at fit and at predict time alike, stored in the record."""
import os

import numpy as np
import pandas as pd
import pytest

from aam import api
from aam.data.numeric import NumericEncoder
from aam.errors import AAMInputError

from tests.conftest import MP, TINY

TABLE, SEQS = os.path.join(MP, "table.biom"), os.path.join(MP, "rep-seqs.fasta")


def _metadata():
    """The slice's samples with a numeric column `age` that alone sets the target `score` (reads are noise)."""
    md = pd.read_csv(os.path.join(MP, "sample-metadata.tsv"), sep="\t", index_col=0).drop(index="#q2:types")
    rng = np.random.default_rng(0)
    age = rng.uniform(20, 80, size=len(md)).round(1)
    out = pd.DataFrame({"age": age, "score": 2 * age + 5}, index=pd.Index(md.index, name="sample-id"))
    return out


def test_the_encoder_scales_on_training_samples_and_reads_a_missing_value_as_their_median():
    training = pd.DataFrame({"age": ["10", "20", "40", ""], "bmi": [20.0, 22.0, 24.0, 26.0]})
    enc = NumericEncoder.fit(training, ["age", "bmi"])
    age, bmi = enc.columns
    assert (age.center, age.indicator) == (20.0, True) and (bmi.center, bmi.indicator) == (23.0, False)
    assert enc.width == 3 and enc.names == ["age", "bmi"]
    new = pd.DataFrame({"age": [np.nan, 20.0, 30.0], "bmi": [np.nan, 23.0, 25.0]})
    x = enc.transform(new)
    # missing: the training median (0 after centring) and, where training had missing values, the flag
    np.testing.assert_allclose(x[0], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(x[1], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(x[2], [10 / age.scale, 0.0, 2 / bmi.scale], rtol=1e-6)
    assert NumericEncoder.from_dict(enc.to_dict()) == enc
    with pytest.raises(AAMInputError, match=r"column 'age' is not numeric \(sample 1 has 'old'\)"):
        NumericEncoder.fit(pd.DataFrame({"age": ["10", "old"]}), ["age"])
    with pytest.raises(AAMInputError, match="no training sample has a value for 'age'"):
        NumericEncoder.fit(pd.DataFrame({"age": [np.nan, np.nan]}), ["age"])
    with pytest.raises(AAMInputError, match="the metadata has no column 'weight'"):
        NumericEncoder.fit(training, ["weight"])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    md = _metadata()
    result = api.train(TABLE, md, "score", sequences=SEQS, numeric_columns=["age"], progress=False, epochs=3,
                       seed=0, forest_trees=50, validation_fraction=0.25,
                       output_dir=str(tmp_path_factory.mktemp("numeric") / "run"), **TINY)
    return result.checkpoint, md


def test_the_model_reads_the_covariate_and_records_how(model):
    checkpoint, md = model
    record = checkpoint.record
    assert record.target.numeric_columns == ["age"] and record.architecture.numeric_inputs == 1
    stored = NumericEncoder.from_dict(record.target.numeric_encoder)
    training = md.loc[record.data.train_samples, "age"]
    assert stored.columns[0].center == pytest.approx(training.median())
    predicted = api.predict(checkpoint, TABLE, sequences=SEQS, metadata=md, num_threads=1)["prediction"]
    # the reads carry nothing about the score: only the covariate can order the samples
    rho = pd.Series(predicted).corr(md.loc[predicted.index, "score"], method="spearman")
    assert rho > 0.8, rho
    # both members read it: reversing the ages changes each member's predictions
    base = api.predict(checkpoint, TABLE, sequences=SEQS, metadata=md, num_threads=1)
    reversed_ages = md.assign(age=md["age"].to_numpy()[::-1])
    moved = api.predict(checkpoint, TABLE, sequences=SEQS, metadata=reversed_ages, num_threads=1)
    for member in ("network", "forest"):
        assert not np.allclose(base[member], moved[member]), member


def test_a_value_missing_at_prediction_is_the_training_median_as_in_training(model):
    checkpoint, md = model
    median = NumericEncoder.from_dict(checkpoint.record.target.numeric_encoder).columns[0].center
    sample = md.index[0]
    as_median = md.copy()
    as_median.loc[sample, "age"] = median
    missing = md.copy()
    missing["age"] = missing["age"].astype(object)
    missing.loc[sample, "age"] = np.nan
    a = api.predict(checkpoint, TABLE, sequences=SEQS, metadata=as_median, num_threads=1)
    b = api.predict(checkpoint, TABLE, sequences=SEQS, metadata=missing, num_threads=1)
    assert a.loc[sample, "prediction"] == b.loc[sample, "prediction"]
    for member in ("network", "forest"):
        assert a.loc[sample, member] == b.loc[sample, member]


def test_prediction_without_the_covariate_is_refused_in_one_line(model):
    checkpoint, md = model
    with pytest.raises(AAMInputError, match=r"reads numeric covariates 'age'; pass the samples' metadata"):
        api.predict(checkpoint, TABLE, sequences=SEQS, num_threads=1)
    with pytest.raises(AAMInputError, match=r"lacks the numeric covariate column\(s\) 'age'"):
        api.predict(checkpoint, TABLE, sequences=SEQS, metadata=md.drop(columns="age"), num_threads=1)


def test_bad_numeric_columns_are_refused_before_training():
    md = _metadata()
    md["site"] = "gut"
    for columns, message in ((["score"], "lists the target column 'score'"),
                             (["age", "age"], "lists 'age' more than once"),
                             (["site"], r"column 'site' is not numeric")):
        with pytest.raises(AAMInputError, match=message):
            api.train(TABLE, md, "score", sequences=SEQS, numeric_columns=columns, progress=False, epochs=1,
                      **TINY)


def test_the_command_line_and_the_plugin_take_numeric_columns(tmp_path):
    import qiime2
    from qiime2.plugins import aam as q2aam

    from aam import cli
    md = _metadata()
    md.to_csv(tmp_path / "md.tsv", sep="\t")
    flags = [x for k, v in {**TINY, "epochs": 1, "forest_trees": 10}.items() for x in (f"--{k.replace('_', '-')}", v)]
    assert cli.main([str(a) for a in ["train", "--table", TABLE, "--sequences", SEQS, "--metadata", tmp_path / "md.tsv",
                                      "--metadata-column", "score", "--numeric-columns", " age ,", "--output-dir",
                                      tmp_path / "run", *flags]]) == 0
    from aam.checkpoint import load_checkpoint
    assert load_checkpoint(tmp_path / "run" / "model.pt").record.target.numeric_columns == ["age"]

    table = qiime2.Artifact.load(os.path.join(MP, "table.qza"))
    sequences = qiime2.Artifact.load(os.path.join(MP, "rep-seqs.qza"))
    metadata = qiime2.Metadata(md)
    model, = q2aam.methods.fit_regressor(table=table, sequences=sequences, metadata=metadata.get_column("score"),
                                         sample_metadata=metadata, numeric_columns=["age"], epochs=1,
                                         forest_trees=10, **{k: v for k, v in TINY.items() if k != "epochs"})
    predictions, = q2aam.methods.predict_regression(model=model, table=table, sequences=sequences,
                                                    sample_metadata=metadata, num_threads=1)
    assert len(predictions.view(pd.Series)) == len(md)
    with pytest.raises(ValueError, match=r"--p-numeric-columns: column\(s\) 'weight' are not in the sample metadata"):
        q2aam.methods.fit_regressor(table=table, sequences=sequences, metadata=metadata.get_column("score"),
                                    sample_metadata=metadata, numeric_columns=["weight"], **TINY)
