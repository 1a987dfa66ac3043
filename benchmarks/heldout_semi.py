"""Semi-supervised recipes of the held-out benchmark: models that use the unlabelled training tables.

With a label fraction below 1, ``fold.pool`` holds every training table and ``fold.train`` only the labelled
ones. A forest reads only the labelled samples; these recipes also read the others, which is what the issue's
label-efficiency goal asks of AAM:

- ``graph``: label propagation over the study's distances (Zhu, Ghahramani & Lafferty 2003, the harmonic
  function) on a k-nearest-neighbour graph of every training table; a held-out sample takes the kernel-weighted
  mean of its nearest training samples' values (the harmonic extension to a new node).
- ``aam-graph``: the same over the distances between AAM's pretrained sample embeddings (pretraining on every
  training table, as the AAM rows do): does AAM's ordination carry labels further than UniFrac's?
- ``rf500-rel+self``: self-training; the forest of ``rf500-rel`` labels the unlabelled training tables and a
  second forest is fit on the labelled and pseudo-labelled samples together.

The neighbourhood size of the graphs is chosen by grouped inner cross-validation on the labelled samples (the
inner held-out groups' labels hidden, the graph and every table unchanged).
"""
import numpy as np
import pandas as pd

from benchmarks.heldout_models import (Prediction, _forest_on, _relative, aam_options, inner_cv, pretrained_encoder,
                                       progress, recipe)

NEIGHBOURS_GRID = (5, 10, 20)


def knn_weights(d, k):
    """Symmetric k-nearest-neighbour affinities with a local scale per sample (Zelnik-Manor & Perona 2004).

    Parameters
    ----------
    d : np.ndarray [N, N]
        Distances.
    k : int

    Returns
    -------
    np.ndarray [N, N]
        w_ij = exp(-d_ij**2 / (s_i s_j)) where j is among i's k nearest (or i among j's), s_i the distance from i
        to its k-th nearest neighbour; 0 elsewhere and on the diagonal.
    """
    n = d.shape[0]
    k = max(1, min(k, n - 1))
    order = np.argsort(d, axis=1, kind="stable")
    scale = np.maximum(d[np.arange(n), order[:, k]], 1e-12)                  # [N]
    w = np.exp(-d ** 2 / (scale[:, None] * scale[None, :]))                 # [N, N]
    near = np.zeros_like(w, dtype=bool)
    near[np.repeat(np.arange(n), k), order[:, 1:k + 1].ravel()] = True
    near |= near.T
    np.fill_diagonal(near, False)
    return np.where(near, w, 0.0), scale


def harmonic(d, labelled, targets, k, prior_weight=1e-6):
    """Values on every node of the graph that agree with `targets` on the labelled nodes and are, elsewhere, the
    weighted mean of their neighbours' (the harmonic function).

    A vanishing pull towards the labelled mean (`prior_weight`) keeps the system solvable when part of the graph
    reaches no labelled node; there the values are that mean.

    Parameters
    ----------
    d : np.ndarray [N, N]
        Distances between all nodes (labelled and unlabelled).
    labelled : np.ndarray [L] of int
        Positions of the labelled nodes.
    targets : np.ndarray [L, C]
        Their values (a column per class for one-hot classes, one column for regression).
    k : int

    Returns
    -------
    (np.ndarray [N, C], np.ndarray [N])
        Values of every node; the local scale of every node (for `extend`).
    """
    w, scale = knn_weights(d, k)
    n = d.shape[0]
    unl = np.setdiff1d(np.arange(n), labelled)
    lap = np.diag(w.sum(axis=1)) - w                                          # [N, N]
    mean = targets.mean(axis=0, keepdims=True)                                # [1, C]
    values = np.zeros((n, targets.shape[1]))
    values[labelled] = targets
    if len(unl):
        a = lap[np.ix_(unl, unl)] + prior_weight * np.eye(len(unl))
        b = -lap[np.ix_(unl, labelled)] @ targets + prior_weight * mean
        values[unl] = np.linalg.solve(a, b)
    return values, scale


def extend(values, scale, cross_d, k):
    """The harmonic extension to new nodes joined to their k nearest graph nodes: kernel-weighted means.

    Parameters
    ----------
    values : np.ndarray [N, C]
    scale : np.ndarray [N]
        Local scales of the graph nodes (`knn_weights`).
    cross_d : np.ndarray [M, N]
        Distances from the new nodes to the graph's nodes.
    k : int

    Returns
    -------
    np.ndarray [M, C]
    """
    k = max(1, min(k, cross_d.shape[1]))
    order = np.argsort(cross_d, axis=1, kind="stable")[:, :k]                 # [M, k]
    near = np.take_along_axis(cross_d, order, axis=1)                         # [M, k]
    own = np.maximum(near[:, -1], 1e-12)                                      # [M]
    w = np.exp(-near ** 2 / (own[:, None] * scale[order]))                    # [M, k]
    w = np.where(w.sum(axis=1, keepdims=True) > 0, w, 1.0)
    return np.einsum("mk,mkc->mc", w, values[order]) / w.sum(axis=1, keepdims=True)


def _targets(fold, ids):
    """Targets of labelled samples as columns: one-hot over the task's classes, or the value. [L, C]"""
    y = fold.train.y.loc[ids]
    if fold.task.classifier:
        classes = list(fold.classes)
        return np.stack([(y == c).to_numpy(float) for c in classes], axis=1)
    return y.to_numpy(float)[:, None]


def _loss(fold, values, truth):
    """Inner-CV loss: error rate, or mean absolute error."""
    if fold.task.classifier:
        classes = np.array(list(fold.classes))
        return float(np.mean(classes[values.argmax(axis=1)] != truth.to_numpy()))
    return float(np.mean(np.abs(values[:, 0] - truth.to_numpy(float))))


def graph_predict(fold, seed, pool_d, cross_d, info):
    """Label propagation on the training tables' graph, the neighbourhood size by grouped inner CV.

    Parameters
    ----------
    pool_d : np.ndarray [P, P]
        Distances between ``fold.pool.ids`` (labelled and unlabelled training samples), in that order.
    cross_d : np.ndarray [M, P]
        Distances from ``fold.test.ids`` to them.
    """
    pos = {s: i for i, s in enumerate(fold.pool.ids)}
    ids = list(fold.train.ids)
    labelled = np.array([pos[s] for s in ids])
    targets = _targets(fold, ids)
    cv, groups = inner_cv(fold, seed)
    grid = [k for k in NEIGHBOURS_GRID if k < len(fold.pool.ids)] or [len(fold.pool.ids) - 1]
    chosen = {"inner_cv": "none (fewer than 3 groups or classes too small)"}
    k = grid[min(1, len(grid) - 1)]
    if cv is not None:
        y_for_split = fold.train.y.loc[ids].to_numpy()
        losses = {}
        for kk in grid:
            fold_losses = []
            for fit_idx, val_idx in cv.split(np.zeros(len(ids)), y_for_split, groups):
                values, _ = harmonic(pool_d, labelled[fit_idx], targets[fit_idx], kk)
                truth = fold.train.y.loc[[ids[i] for i in val_idx]]
                fold_losses.append(_loss(fold, values[labelled[val_idx]], truth))
            losses[kk] = float(np.mean(fold_losses))
        k = min(grid, key=lambda kk: (losses[kk], kk))
        chosen = {"inner_folds": cv.get_n_splits(), "inner_losses": losses}
    values, scale = harmonic(pool_d, labelled, targets, k)
    test_values = extend(values, scale, cross_d, k)                          # [M, C]
    index = list(fold.test.ids)
    info = {**info, "neighbours": k, "graph_samples": len(fold.pool.ids), "labelled": len(ids), **chosen}
    if fold.task.classifier:
        prob = np.clip(test_values, 0, None)
        prob = prob / np.maximum(prob.sum(axis=1, keepdims=True), 1e-12)
        prob = pd.DataFrame(prob, index=index, columns=list(fold.classes))
        return Prediction(prob.idxmax(axis=1), prob, info)
    return Prediction(pd.Series(test_values[:, 0], index=index), None, info)


def _blocks(dm, fold):
    """The training tables' block of a DistanceMatrix and the held-out samples' rows against them: [P, P], [M, P]."""
    pool = [dm.index(s) for s in fold.pool.ids]
    test = [dm.index(s) for s in fold.test.ids]
    return dm.data[np.ix_(pool, pool)], dm.data[np.ix_(test, pool)]


@recipe("graph", "label propagation (harmonic function) over the study's distances on a k-nearest-neighbour graph "
        "of every training table, labelled or not; held-out samples take a kernel-weighted mean of their nearest "
        "training samples' values; k by grouped inner CV (semi-supervised, classical)", needs_distances=True,
        default=False)
def graph(fold, seed, budget):
    return graph_predict(fold, seed, *_blocks(fold.distances(), fold), {"distances": fold.task.beta})


@recipe("aam-graph", "graph over the Euclidean distances between AAM's pretrained sample embeddings (pretraining "
        "on every training table as in aam; the embedding of the UniFrac space, as aam embed gives it) instead of "
        "the study's distances", default=False, uses_budget=True)
def aam_graph(fold, seed, budget):
    from aam import api
    data = fold.data
    _, pre_kw = aam_options(fold, seed, budget)
    log = progress(f"{data.task.name} fold {fold.index + 1} f={fold.label_fraction:g} aam-graph")
    pre, reused = pretrained_encoder(fold, pre_kw, log)
    table = fold.pool.table.merge(fold.test.table)
    _, dm = api.embed(pre.checkpoint, table, sequences=data.sequences, log=log, num_threads=budget.threads,
                      seed=seed)
    info = {"distances": "aam embedding", "pretrain_options": pre_kw, "pretrain_reused": reused is not None}
    if reused is not None:
        info["reused_seconds"] = round(reused, 1)
    return graph_predict(fold, seed, *_blocks(dm, fold), info)


@recipe("rf500-rel+self", "self-training: rf500-rel's forest labels the unlabelled training tables, and a second "
        "500-tree forest is fit on labelled and pseudo-labelled samples (at full labels it is rf500-rel)",
        default=False)
def rf500_relative_self(fold, seed, budget):
    features = list(fold.pool.table.ids("observation"))
    x_train = _relative(fold.train.table, features)
    x_test = _relative(fold.test.table, features)
    labelled = set(fold.train.ids)
    unlabelled = [s for s in fold.pool.ids if s not in labelled]
    if not unlabelled:
        return _forest_on(fold, seed, x_train, x_test, {"features": len(features), "pseudo_labelled": 0})
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    y = fold.train.y.loc[[str(s) for s in fold.train.table.ids()]].to_numpy()
    teacher = (RandomForestClassifier if fold.task.classifier else RandomForestRegressor)(
        n_jobs=1, n_estimators=500, random_state=seed).fit(x_train, y)
    x_other = _relative(fold.pool.table.filter(unlabelled, axis="sample", inplace=False), features)
    pseudo = teacher.predict(x_other)
    return _forest_on(fold, seed, np.vstack([x_train, x_other]), x_test,
                      {"features": len(features), "pseudo_labelled": len(unlabelled)},
                      y=np.concatenate([y, pseudo]))
