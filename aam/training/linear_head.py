"""A linear head fitted in closed form: ridge or multinomial logistic regression on frozen sample embeddings.

With a pretrained base kept frozen, each training sample becomes a fixed vector (its sample and distance
embeddings, averaged over rarefaction draws, plus one-hot covariates), and the best linear map from those vectors
to the target is a convex problem: no epochs, no learning rate, no early stopping. The penalty is the only
hyperparameter; it is chosen by k-fold cross-validation over the training samples (grouped by the group column
when there is one, so repeated samples of a subject never sit on both sides), and the final fit uses them all.
The fitted map is folded back into raw-feature weights so the model applies it as one `torch.nn.Linear`.
"""
from dataclasses import dataclass

import numpy as np

RIDGE_ALPHAS = np.logspace(-3, 4, 15)
LOGISTIC_CS = np.logspace(-3, 3, 13)


@dataclass
class LinearFit:
    """A fitted linear head.

    Attributes
    ----------
    weight : np.ndarray, shape [K, F]
    bias : np.ndarray, shape [K]
    penalty : float
        The chosen ridge alpha, or the inverse regularization strength C of the logistic regression.
    cv_score : float
        Mean cross-validated score at that penalty: MSE in the training scale (regression) or log loss.
    oof : np.ndarray
        Out-of-fold predictions at that penalty (training scale values [N], or class probabilities [N, K]).
    folds : int
    """

    weight: np.ndarray
    bias: np.ndarray
    penalty: float
    cv_score: float
    oof: np.ndarray
    folds: int


def _splits(n, y, groups, classifier, seed, k=5):
    """Cross-validation folds over the training samples: grouped when there are groups, stratified by class when
    the classes allow it (every class in every fold), and never more folds than groups or samples."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold
    rs = seed % (2 ** 32)
    x = np.zeros(n)
    if groups is not None:
        k = max(2, min(k, len(set(groups))))
        if classifier:
            smallest = int(np.bincount(y).min()) if len(np.unique(y)) > 1 else 0
            if smallest >= k:
                return list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=rs).split(x, y, groups))
        return list(GroupKFold(n_splits=k).split(x, y, groups))
    if classifier:
        smallest = int(np.bincount(y)[np.unique(y)].min())
        if smallest >= 2:
            return list(StratifiedKFold(n_splits=min(k, smallest), shuffle=True, random_state=rs).split(x, y))
    return list(KFold(n_splits=max(2, min(k, n)), shuffle=True, random_state=rs).split(x))


def _standardize(x):
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std < 1e-12] = 1.0  # constant columns (an unused covariate level) stay at 0 after centering
    return (x - mean) / std, mean, std


def _fold_back(coef, intercept, mean, std):
    """Weights on standardized features -> weights and bias on the raw features."""
    weight = coef / std                                                   # [K, F]
    bias = intercept - weight @ mean                                      # [K]
    return weight, bias


def fit_linear_head(x, y, classifier, n_classes=None, groups=None, seed=0):
    """Fit the head on features `x` [N, F] and targets `y` [N] (training scale, or class indices).

    Returns
    -------
    LinearFit
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    x = np.asarray(x, dtype=np.float64)
    z, mean, std = _standardize(x)
    y = np.asarray(y)
    splits = _splits(len(y), y.astype(int) if classifier else y, groups, classifier, seed)

    def model(penalty):
        if classifier:
            return LogisticRegression(C=penalty, max_iter=2000)
        return Ridge(alpha=penalty)

    def oof_for(penalty):
        out = np.zeros((len(y), n_classes)) if classifier else np.zeros(len(y))
        for train, test in splits:
            m = model(penalty).fit(z[train], y[train])
            if classifier:
                # a fold may lack a class: place the probabilities of the classes it has
                out[np.ix_(test, m.classes_.astype(int))] = m.predict_proba(z[test])
            else:
                out[test] = m.predict(z[test])
        return out

    def score(oof):
        if classifier:
            p = np.clip(oof[np.arange(len(y)), y.astype(int)], 1e-15, 1.0)
            return float(-np.mean(np.log(p)))
        return float(np.mean((oof - y) ** 2))

    grid = LOGISTIC_CS if classifier else RIDGE_ALPHAS
    results = [(score(oof), penalty, oof) for penalty in grid for oof in [oof_for(penalty)]]
    best_score, best_penalty, best_oof = min(results, key=lambda r: r[0])
    final = model(best_penalty).fit(z, y)
    if classifier:
        coef = np.zeros((n_classes, x.shape[1]))
        intercept = np.zeros(n_classes)
        present = final.classes_.astype(int)
        if len(present) == 2 and final.coef_.shape[0] == 1:
            # binary logistic regression keeps one row: logits (-w/2, +w/2) give the same softmax
            coef[present[0]], coef[present[1]] = -final.coef_[0] / 2, final.coef_[0] / 2
            intercept[present[0]], intercept[present[1]] = -final.intercept_[0] / 2, final.intercept_[0] / 2
        else:
            coef[present], intercept[present] = final.coef_, final.intercept_
            missing = [c for c in range(n_classes) if c not in set(present)]
            intercept[missing] = -1e4  # a class absent from training is never predicted
    else:
        coef, intercept = final.coef_.reshape(1, -1), np.atleast_1d(final.intercept_)
    weight, bias = _fold_back(coef, intercept, mean, std)
    return LinearFit(weight, bias, float(best_penalty), best_score, best_oof, len(splits))
