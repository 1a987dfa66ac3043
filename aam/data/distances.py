"""Distances between samples for pretraining: unweighted UniFrac and Faith PD from a tree, or any precomputed
distance matrix.

UniFrac is computed with the `unifrac` library (Striped UniFrac, McDonald et al. 2018). A precomputed matrix can be
any metric (weighted UniFrac, Bray-Curtis, Aitchison, ...): the objective only asks sample embeddings to reproduce
the distances.
"""
import functools
import os
import tempfile

import numpy as np
import pandas as pd

from aam.errors import AAMInputError, preview


def load_tree(tree):
    """A phylogeny as `unifrac` consumes it: a `skbio.TreeNode`, or the path of a Newick file.

    Newick files are not parsed into scikit-bio objects: reading a 200,000-tip SEPP insertion tree that way takes
    minutes, while `unifrac` reads the file natively in a second. A Phylogeny .qza is unpacked to a temporary
    Newick file.

    Parameters
    ----------
    tree : skbio.TreeNode or str
        A tree object, a Newick file or a Phylogeny[Rooted] .qza.

    Returns
    -------
    skbio.TreeNode or str
    """
    import skbio
    if isinstance(tree, skbio.TreeNode):
        return tree
    path = os.fspath(tree)
    if not os.path.exists(path):
        raise AAMInputError(f"tree file {path!r} does not exist.")
    if path.endswith(".qza"):
        from aam.data.table import extract_from_qza
        path = extract_from_qza(path, ".nwk")
    tip_names(path)  # fails early and clearly on a file that is not Newick
    return path


def tip_names(tree):
    """The set of tip names of a `skbio.TreeNode` or a Newick file."""
    if not isinstance(tree, (str, os.PathLike)):
        return {t.name for t in tree.tips()}
    path = os.fspath(tree)
    return _newick_tips(path, os.path.getmtime(path))


@functools.lru_cache(maxsize=4)
def _newick_tips(path, mtime):
    # cached per file version: validation, UniFrac and Faith PD all ask for the tips of the same tree
    import bp  # the balanced-parentheses tree library unifrac is built on: parses large trees in C
    with open(path) as fh:
        text = fh.read().strip()
    try:
        parsed = bp.parse_newick(text)
    except Exception as err:
        raise AAMInputError(f"tree file {path!r} is not a Newick tree: {err}") from None
    return frozenset(parsed.name(i) for i in np.flatnonzero(np.asarray(parsed.B)) if parsed.isleaf(i))


def check_tree_covers(table, tree):
    """Every feature of `table` must be a tip of `tree`; raises an error with counts and examples otherwise."""
    tips = tip_names(tree)
    features = [str(f) for f in table.ids("observation")]
    missing = [f for f in features if f not in tips]
    if missing:
        raise AAMInputError(
            f"{len(missing)} of {len(features)} features of the table are not tips of the tree "
            f"(e.g. {preview(missing, 3)}). Use the tree built from this table's representative sequences "
            "(e.g. qiime phylogeny align-to-tree-mafft-fasttree); with a SEPP insertion tree, drop the fragments "
            "that were not inserted (qiime fragment-insertion filter-features); or pass a precomputed distance "
            "matrix.")


def _tree_file(tree, tmpdir):
    if isinstance(tree, (str, os.PathLike)):
        return os.fspath(tree)
    path = os.path.join(tmpdir, "tree.nwk")
    tree.write(path, format="newick")
    return path


def _table_file(table, tmpdir):
    from biom.util import biom_open
    path = os.path.join(tmpdir, "table.biom")
    with biom_open(path, "w") as fh:
        table.to_hdf5(fh, "aam")
    return path


def compute_unweighted_unifrac(table, tree, threads=1):
    """Unweighted UniFrac between the samples of a (rarefied) table.

    Parameters
    ----------
    table : biom.Table
    tree : skbio.TreeNode or path
        Rooted phylogeny whose tips include every feature.
    threads : int

    Returns
    -------
    skbio.DistanceMatrix
    """
    import unifrac
    tree = load_tree(tree)
    check_tree_covers(table, tree)
    with tempfile.TemporaryDirectory(prefix="aam-unifrac-") as tmp:
        # file paths are the interface every unifrac release supports
        return unifrac.unweighted(_table_file(table, tmp), _tree_file(tree, tmp), threads=threads)


def compute_faith_pd(table, tree):
    """Faith's phylogenetic diversity of every sample.

    Returns
    -------
    pd.Series
        Indexed by sample ID.
    """
    import unifrac
    tree = load_tree(tree)
    check_tree_covers(table, tree)
    with tempfile.TemporaryDirectory(prefix="aam-faith-") as tmp:
        result = unifrac.faith_pd(_table_file(table, tmp), _tree_file(tree, tmp))
    result.index = result.index.astype(str)
    return result.astype(float)


def _read_h5(path):
    """A distance matrix written by `ssu` (unifrac-binaries) in HDF5 format ('order' + 'matrix' datasets)."""
    import h5py
    import skbio
    try:
        fh = h5py.File(path, "r")
    except OSError as err:  # h5py's own message names the HDF5 signature, not what the user should do
        raise AAMInputError(f"{path} ends in .h5 but is not an HDF5 file ({err}); give the .h5 distance matrix "
                            "written by ssu, or the matrix as .tsv / .csv / .npy.") from None
    with fh:
        if "matrix" not in fh or "order" not in fh:
            raise AAMInputError(f"{path} is HDF5 but not a distance matrix written by ssu (expected 'order' and "
                                "'matrix' datasets).")
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in fh["order"][:]]
        data = np.asarray(fh["matrix"][:], dtype=np.float64)
    return skbio.DistanceMatrix(data, ids=ids, validate=False)


def _read_text(path, sep):
    import skbio
    frame = pd.read_csv(path, sep=sep, index_col=0, dtype={0: str})
    frame.index = frame.index.astype(str)
    frame.columns = frame.columns.astype(str)
    if list(frame.index) != list(frame.columns):
        if set(frame.index) != set(frame.columns):
            raise AAMInputError(f"{path}: row and column sample IDs differ; a distance matrix is square with the "
                                "same IDs on both axes.")
        frame = frame.loc[:, list(frame.index)]
    return skbio.DistanceMatrix(frame.to_numpy(dtype=np.float64), ids=list(frame.index), validate=False)


def _load_numeric_npy(path):
    """The array of a ``.npy`` file, refused unless it holds numbers (never unpickled)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        # a .npy of Python objects needs pickle, which AAM never unpickles from a file
        raise AAMInputError(f"{path} is not a numeric .npy matrix ({str(err).splitlines()[0][:120]}); save "
                            "the distances as a float array (numpy.save of a 2-D float array), or as a "
                            "TSV / QIIME 2 DistanceMatrix.") from None
    if not np.issubdtype(data.dtype, np.number):
        raise AAMInputError(f"{path} holds {data.dtype} values, not numbers; save the distances as a float "
                            "array.")
    return data


def _ids_beside(npy_path):
    """Sample IDs from a ``<name>.ids.txt``, ``<name>.txt`` or ``<name>_ids.txt`` next to a ``.npy`` (or None).

    The first of those files that exists is read: one ID per line, blank lines skipped.
    """
    stem = npy_path[:-4]
    for candidate in (stem + ".ids.txt", stem + ".txt", stem + "_ids.txt"):
        if os.path.exists(candidate):
            with open(candidate) as fh:
                return [line.strip() for line in fh if line.strip()]
    return None


def _read_npy(path, ids):
    """A bare ``.npy`` matrix with its sample IDs (given, or from a file beside it)."""
    import skbio
    data = _load_numeric_npy(path)
    if ids is None:
        ids = _ids_beside(path)
    if ids is None:
        raise AAMInputError(f"{path} is a bare .npy matrix: pass its sample IDs (one per line in "
                            f"{path[:-4]}.ids.txt, or {{input:distance_ids}}).")
    if data.ndim != 2 or data.shape[0] != data.shape[1] or data.shape[0] != len(ids):
        raise AAMInputError(f"{path}: matrix of shape {data.shape} does not match {len(ids)} sample IDs.")
    return skbio.DistanceMatrix(np.asarray(data, dtype=np.float64), ids=[str(i) for i in ids], validate=False)


def _read_qza(path):
    """The matrix of a QIIME 2 DistanceMatrix artifact (its lsmat ``.tsv``, read without QIIME 2)."""
    import io
    import skbio
    from aam.data.table import read_from_qza
    return skbio.DistanceMatrix.read(io.StringIO(read_from_qza(path, ".tsv").decode()), format="lsmat")


def _read_lsmat_or_tsv(path):
    """scikit-bio's lsmat format, or else a square TSV with sample IDs in the first row and column."""
    import skbio
    try:
        return skbio.DistanceMatrix.read(path, format="lsmat")
    except Exception:
        return _read_text(path, "\t")


def _read_distance_file(source, ids):
    """The distance matrix in the file `source`, read by its extension (see `load_distance_matrix`)."""
    path = os.fspath(source)
    if not os.path.exists(path):
        raise AAMInputError(f"distance matrix file {path!r} does not exist.")
    lower = path.lower()
    if lower.endswith(".npy"):
        return _read_npy(path, ids)
    if lower.endswith((".h5", ".hdf5")):
        return _read_h5(path)
    if lower.endswith(".qza"):
        return _read_qza(path)
    if lower.endswith(".csv"):
        return _read_text(path, ",")
    return _read_lsmat_or_tsv(path)


def _check_distances(data):
    """Refuse a matrix that is not a distance matrix: non-finite, negative or asymmetric values."""
    if not np.isfinite(data).all():
        raise AAMInputError("the distance matrix contains NaN or infinite values.")
    if (data < 0).any():
        raise AAMInputError("the distance matrix contains negative distances.")
    if not np.allclose(data, data.T, atol=1e-6):
        raise AAMInputError("the distance matrix is not symmetric.")


def load_distance_matrix(source, ids=None):
    """A distance matrix from an object or a file.

    Parameters
    ----------
    source : skbio.DistanceMatrix or str
        A DistanceMatrix; or a path: ``.npy`` (with `ids`, or a ``<name>.ids.txt`` / ``<name>.txt`` beside it, one ID
        per line), ``.h5`` from ``ssu``, ``.csv`` / ``.tsv`` (square, sample IDs in the first row and column), a
        DistanceMatrix ``.qza``, or scikit-bio's lsmat text format.
    ids : list of str, optional
        Sample IDs of a ``.npy`` matrix, in row order.

    Returns
    -------
    skbio.DistanceMatrix
        `source` itself when it is one.

    Raises
    ------
    AAMInputError
        A missing or unreadable file, a ``.npy`` without sample IDs, or values that are not distances.
    """
    import skbio
    dm = source if isinstance(source, skbio.DistanceMatrix) else _read_distance_file(source, ids)
    _check_distances(dm.data)
    return dm


def align_distance_matrix(dm, sample_ids):
    """The [N, N] float32 block of `dm` for `sample_ids`, in that order (IDs matched by name).

    Raises
    ------
    AAMInputError
        Listing the samples absent from the matrix.
    """
    present = set(str(i) for i in dm.ids)
    missing = [s for s in sample_ids if s not in present]
    if missing:
        raise AAMInputError(f"{len(missing)} sample(s) of the table are not in the distance matrix: "
                            f"{preview(missing)}. Compute the matrix on the same samples, or filter the table.")
    sub = dm.filter([str(s) for s in sample_ids], strict=True)
    return np.ascontiguousarray(sub.data, dtype=np.float32)
