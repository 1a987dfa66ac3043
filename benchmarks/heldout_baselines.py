"""The baselines a microbiome-ML reviewer expects, as held-out recipes (registered on import).

- ``constant``: the training mean (regression) or the majority class with the training class shares as
  probabilities (classification). Any model must beat it to have learnt anything.
- ``depth``: reads per sample alone (log10 of the raw reads): logistic regression for classification, a
  100-tree forest for regression. A task it scores well on is confounded by sequencing depth.
- ``et100``, ``gb100``: ExtraTrees and gradient boosting exactly as q2-sample-classifier builds them
  (``--p-estimator ExtraTrees*`` / ``GradientBoosting*``, ``n_estimators=100``) on the fold's rarefied counts.
- ``clr-linear``: centred log-ratios of the rarefied counts (pseudocount 1; features present in at least 10% of
  the training samples) and ridge / logistic regression, the penalty chosen by grouped inner CV.
- ``knn``: k nearest neighbours on the study's distances (UniFrac, or Bray-Curtis without a tree), k by grouped
  inner CV.
- ``best-classical``: among the classical recipes of `CLASSICAL_CANDIDATES`, the one a 3-fold grouped inner CV on
  the training samples scores best (`benchmarks.heldout_select`); never chosen by the held-out fold.
"""
import numpy as np
import pandas as pd

from benchmarks import heldout_models as M
from benchmarks.heldout_models import Prediction, recipe

#: the recipes `best-classical` chooses among (each cheap: forests, linear models, neighbours)
CLASSICAL_CANDIDATES = ("rf500", "rf500-rel", "clr-linear", "knn", "pcoa")
K_GRID = (1, 3, 5, 9, 15)
MIN_PREVALENCE = 0.10


def _ids(table):
    return [str(s) for s in table.ids()]


def _probabilities(model, x, index):
    return pd.DataFrame(model.predict_proba(x), index=index, columns=[str(c) for c in model.classes_])


@recipe("constant", "the training mean (regression) or majority class (classification, with the training class "
        "shares as probabilities): what a model that learnt nothing scores")
def constant(fold, seed, budget):
    y = fold.train.y.loc[fold.train.ids]
    index = list(fold.test.ids)
    if not fold.task.classifier:
        return Prediction(pd.Series(float(y.mean()), index=index), None, {"mean": float(y.mean())})
    shares = y.value_counts(normalize=True)
    majority = sorted(shares.index[shares == shares.max()])[0]  # ties broken by name, deterministically
    prob = pd.DataFrame([shares.to_dict()] * len(index), index=index)
    return Prediction(pd.Series(majority, index=index), prob, {"majority": majority})


def log_reads(samples):
    """log10 of each sample's raw reads ([N, 1], in the table's sample order)."""
    reads = np.asarray(samples.table.sum(axis="sample"), dtype=float).ravel()
    return np.log10(np.maximum(reads, 1.0))[:, None]


@recipe("depth", "reads per sample alone (log10 of the raw reads): logistic regression (classification) or a "
        "100-tree forest (regression); scoring well means the task is confounded by sequencing depth")
def depth_only(fold, seed, budget):
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    x_train, x_test = log_reads(fold.train), log_reads(fold.test)
    y = fold.train.y.loc[_ids(fold.train.table)].to_numpy()
    index = _ids(fold.test.table)
    if fold.task.classifier:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x_train, y)
        return Prediction(pd.Series(model.predict(x_test), index=index), _probabilities(model, x_test, index),
                          {"input": "log10 reads"})
    model = RandomForestRegressor(n_estimators=100, min_samples_leaf=5, n_jobs=1, random_state=seed)
    model.fit(x_train, y)
    return Prediction(pd.Series(model.predict(x_test), index=index), None, {"input": "log10 reads"})


def q2_estimator(fold, seed, name):
    """An estimator of q2-sample-classifier 2022.11 as `fit-classifier` / `fit-regressor --p-estimator` build it.

    ``Pipeline([('dv', DictVectorizer()), ('est', estimator)])`` on the table's counts (here the fold's rarefied
    draw), with ``n_estimators`` 100 (the action's default), ``random_state`` the seed and, where the estimator
    takes it, ``n_jobs`` 1 (`utilities._set_parameters_and_estimator`).
    """
    from sklearn import ensemble
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.pipeline import Pipeline
    cls = getattr(ensemble, name + ("Classifier" if fold.task.classifier else "Regressor"))
    params = {"n_estimators": 100, "random_state": seed}
    if "n_jobs" in cls().get_params():
        params["n_jobs"] = 1
    model = Pipeline([("dv", DictVectorizer()), ("est", cls(**params))])
    y = fold.train.y.loc[_ids(fold.train.rarefied)].to_numpy()
    model.fit(M._feature_dicts(fold.train.rarefied), y)
    x_test = M._feature_dicts(fold.test.rarefied)
    index = _ids(fold.test.rarefied)
    values = pd.Series(model.predict(x_test), index=index)
    prob = _probabilities(model, x_test, index) if fold.task.classifier else None
    return Prediction(values, prob, {"estimator": cls.__name__, **params})


@recipe("et100", "ExtraTrees, 100 trees, rarefied counts, as q2-sample-classifier's --p-estimator ExtraTrees*")
def extra_trees(fold, seed, budget):
    return q2_estimator(fold, seed, "ExtraTrees")


@recipe("gb100", "gradient boosting, 100 stages, rarefied counts, as q2-sample-classifier's --p-estimator "
        "GradientBoosting*")
def gradient_boosting(fold, seed, budget):
    return q2_estimator(fold, seed, "GradientBoosting")


def clr(table, features):
    """Centred log-ratios of a table's counts with pseudocount 1, columns in the order of `features`: [N, F]."""
    counts = table.to_dataframe(dense=True).T.reindex(columns=features, fill_value=0).to_numpy(np.float64)
    logs = np.log(counts + 1.0)
    return logs - logs.mean(axis=1, keepdims=True)


def _prevalent(table, share):
    """Features present in at least `share` of the table's samples (at least 2 samples)."""
    present = table.to_dataframe(dense=True).gt(0).sum(axis=1)
    need = max(2, int(np.ceil(share * table.shape[1])))
    return [str(f) for f in present.index[present >= need]]


def _grid_fit(fold, seed, estimator, grid, x, y, scoring):
    """Fit `estimator` with its parameter chosen by `benchmarks.heldout_models.inner_cv` (grouped); a middle value
    of the grid when the training fold has too few groups. Returns (fitted model, what was chosen)."""
    from sklearn.model_selection import GridSearchCV
    cv, groups = M.inner_cv(fold, seed)
    (param, values), = grid.items()
    if cv is None:
        estimator.set_params(**{param: values[len(values) // 2]})
        return estimator.fit(x, y), {"inner_cv": "none (fewer than 3 groups or classes too small)"}
    search = GridSearchCV(estimator, grid, scoring=scoring, cv=cv, error_score=np.nan).fit(x, y, groups=groups)
    value = search.best_params_[param]
    return search.best_estimator_, {param.split("__")[-1]: float(value), "inner_folds": cv.get_n_splits()}


@recipe("clr-linear", "CLR of the rarefied counts (pseudocount 1, features in >= 10% of the training samples), "
        "ridge / logistic regression, penalty by grouped inner CV")
def clr_linear(fold, seed, budget):
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    features = _prevalent(fold.train.rarefied, MIN_PREVALENCE)
    x = clr(fold.train.rarefied, features)
    y = fold.train.y.loc[_ids(fold.train.rarefied)].to_numpy()
    if fold.task.classifier:
        est, grid, scoring = LogisticRegression(max_iter=5000), {"est__C": list(M.C_GRID)}, "accuracy"
    else:
        est, grid, scoring = Ridge(), {"est__alpha": list(M.ALPHA_GRID)}, "neg_mean_absolute_error"
    model, chosen = _grid_fit(fold, seed, Pipeline([("scale", StandardScaler()), ("est", est)]), grid, x, y, scoring)
    x_test = clr(fold.test.rarefied, features)
    index = _ids(fold.test.rarefied)
    prob = _probabilities(model, x_test, index) if fold.task.classifier else None
    return Prediction(pd.Series(model.predict(x_test), index=index), prob, {"features": len(features), **chosen})


@recipe("knn", "k nearest neighbours on the study's distances (UniFrac, or Bray-Curtis without a tree) of the "
        "rarefied draw, k by grouped inner CV", needs_distances=True)
def knn(fold, seed, budget):
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    dm = fold.distances()
    train, test = list(fold.train.ids), list(fold.test.ids)
    pos = {s: i for i, s in enumerate(dm.ids)}
    x = dm.data[np.ix_([pos[s] for s in train], [pos[s] for s in train])]
    x_test = dm.data[np.ix_([pos[s] for s in test], [pos[s] for s in train])]
    y = fold.train.y.loc[train].to_numpy()
    ks = [k for k in K_GRID if k <= len(train) // 2] or [1]  # an inner training split holds about half or more
    if fold.task.classifier:
        est, scoring = KNeighborsClassifier(metric="precomputed"), "accuracy"
    else:
        est, scoring = KNeighborsRegressor(metric="precomputed"), "neg_mean_absolute_error"
    model, chosen = _grid_fit(fold, seed, est, {"n_neighbors": ks}, x, y, scoring)
    prob = _probabilities(model, x_test, test) if fold.task.classifier else None
    return Prediction(pd.Series(model.predict(x_test), index=test), prob, chosen)


@recipe("best-classical", "the classical recipe (of " + ", ".join(CLASSICAL_CANDIDATES) + ") a 3-fold grouped "
        "inner CV on the training samples scores best (MAE; balanced accuracy), refit on the whole training fold",
        needs_distances=True)
def best_classical(fold, seed, budget):
    from benchmarks import heldout_select
    choice = heldout_select.choose(fold, seed, budget, CLASSICAL_CANDIDATES)
    pred = M.RECIPES[choice.recipe].fn(fold, seed, budget)
    return Prediction(pred.values, pred.probabilities, {"chosen": choice.recipe, "inner_scores": choice.scores,
                                                        "inner_folds": choice.n_inner, "chosen_info": pred.info})
