"""Feature tables: load, validate, drop empties, rarefy.

Tables are `biom.Table` objects (features x samples, as biom-format stores them). Rarefaction uses biom-format's
own `subsample` (without replacement), seeded, so the same seed gives the same table.
"""
import os
import zipfile

import numpy as np

from aam.errors import AAMInputError, preview


def read_from_qza(path, suffix):
    """Extract the one file ending with `suffix` from the data/ directory of a QIIME 2 archive into memory.

    Lets the standalone CLI take .qza files without importing QIIME 2.

    Returns
    -------
    bytes
    """
    from aam.safety import check_archive, read_archive_member
    check_archive(path, "QIIME 2 archive")  # caps against decompression bombs, before anything is unpacked
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if "/data/" in n and n.endswith(suffix)]
            if len(names) != 1:
                raise AAMInputError(f"{path} holds no single data file ending with {suffix!r}; is it the right kind "
                                    "of artifact?")
            return read_archive_member(zf, zf.getinfo(names[0]), path, "QIIME 2 archive")
    except zipfile.BadZipFile:
        raise AAMInputError(f"{path} is not a QIIME 2 archive (.qza) or is damaged.") from None


_EXTRACTED = []  # temporary directories of files unpacked from .qza archives (removed at exit)


def extract_from_qza(path, suffix):
    """Unpack the data file ending with `suffix` of a QIIME 2 archive to a temporary file; returns its path.

    For readers that need a file (BIOM HDF5, Newick for unifrac, FASTA); the file lives until the process ends.
    """
    import atexit
    import shutil
    import tempfile
    data = read_from_qza(path, suffix)
    if not _EXTRACTED:
        atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in _EXTRACTED])
    _EXTRACTED.append(tempfile.mkdtemp(prefix="aam-qza-"))
    out = os.path.join(_EXTRACTED[-1], "data" + suffix)
    with open(out, "wb") as fh:
        fh.write(data)
    return out


def load_table(source, name="table"):
    """A `biom.Table` from a table object, a BIOM file (v1 JSON or v2 HDF5) or a FeatureTable .qza.

    Parameters
    ----------
    source : biom.Table or str
    name : str
        How messages refer to the table.
    """
    import biom
    if isinstance(source, biom.Table):
        return source
    path = os.fspath(source)
    if not os.path.exists(path):
        raise AAMInputError(f"{name} file {path!r} does not exist.")
    if path.endswith(".qza"):
        return load_table(extract_from_qza(path, ".biom"), name)
    try:
        table = biom.load_table(path)
    except Exception as err:  # biom raises many types for a file that is not BIOM
        table = _hdf5_with_utf8_ids(path)
        if table is not None:
            return table
        raise AAMInputError(f"{name} file {path!r} is not a readable BIOM table (v1 JSON or v2 HDF5): {err}. "
                            "Export a FeatureTable[Frequency] with `qiime tools export` or convert TSV tables "
                            "with `biom convert --to-hdf5`.") from None
    if table.shape == (0, 0):
        # biom reads any text as a classic TSV table: a file that is no table at all comes back empty
        raise AAMInputError(f"{name} file {path!r} holds no samples and no features: it is not a BIOM table (v1 JSON "
                            "or v2 HDF5), or an empty one. Export a FeatureTable[Frequency] with `qiime tools export`.")
    return table


def _hdf5_with_utf8_ids(path):
    """A BIOM v2 HDF5 table whose IDs are not ASCII, or None when the file is not such a table.

    biom-format 2.1.12 (Debian's) decodes HDF5 IDs as ASCII and fails on any other character, reporting that the
    file "does not appear to be a BIOM file"; the format itself stores UTF-8, so read it directly.
    """
    import biom
    import scipy.sparse as sp
    try:
        import h5py
        with h5py.File(path, "r") as f:
            obs = [i.decode("utf-8") if isinstance(i, bytes) else str(i) for i in f["observation/ids"][:]]
            samples = [i.decode("utf-8") if isinstance(i, bytes) else str(i) for i in f["sample/ids"][:]]
            m = f["observation/matrix"]
            matrix = sp.csr_matrix((m["data"][:], m["indices"][:], m["indptr"][:]), shape=(len(obs), len(samples)))
    except Exception:  # not HDF5, or not laid out as BIOM v2
        return None
    if all(x.isascii() for x in obs + samples):
        return None  # an ASCII table biom could not read is broken for another reason
    return biom.Table(matrix, obs, samples)


# a cell above this is not a read count (float64 holds integers exactly up to 2^53, and no run yields 1e12 reads)
MAX_COUNT = 1e12


def validate_table(table, name="table"):
    """Check that a table holds non-negative integer counts with at least one sample and one feature.

    Raises
    ------
    AAMInputError
    """
    n_features, n_samples = table.shape
    broken = [str(s) for s in table.ids() if any(ch in str(s) for ch in "\t\n\r")]
    if broken:
        raise AAMInputError(f"{name} has sample ID(s) containing a tab or line break ({preview(broken)}); no "
                            "metadata or output file can hold such an ID. Rename those samples.")
    if n_samples == 0 or n_features == 0:
        raise AAMInputError(f"{name} is empty ({n_samples} samples x {n_features} features); AAM needs a table "
                            "with reads.")
    data = table.matrix_data.data
    if data.size and not np.isfinite(data).all():
        raise AAMInputError(f"{name} contains NaN or infinite counts; fix the table.")
    if data.size and (data < 0).any():
        rows, cols = table.matrix_data.nonzero()
        neg = table.matrix_data[rows, cols].A1 < 0
        samples = sorted({str(table.ids()[c]) for c in cols[neg]})
        raise AAMInputError(f"{name} has negative counts in samples {preview(samples)}; counts must be >= 0.")
    if data.size and data.max() > MAX_COUNT:
        rows, cols = table.matrix_data.nonzero()
        big = table.matrix_data[rows, cols].A1 > MAX_COUNT
        samples = sorted({str(table.ids()[c]) for c in cols[big]})
        raise AAMInputError(f"{name} has counts above {MAX_COUNT:.0e} in samples {preview(samples)} (largest "
                            f"{data.max():.3g}); no sequencing run yields that many reads of one feature. These are "
                            "not read counts: fix the table (e.g. a units or parsing error).")
    if data.size and not np.allclose(data, np.round(data)):
        raise AAMInputError(f"{name} holds non-integer values (relative frequencies?). AAM needs read counts: "
                            "use the FeatureTable[Frequency] from DADA2/deblur, not a relative-frequency table.")
    totals = np.asarray(table.sum(axis="sample"))
    if totals.sum() == 0:
        raise AAMInputError(f"{name} has no reads in any sample.")


def drop_empty(table):
    """The table without features (and samples) that have no reads."""
    table = table.remove_empty(axis="observation", inplace=False)
    return table.remove_empty(axis="sample", inplace=False)


def sample_depths(table):
    """Reads per sample as a dict sample ID -> total."""
    return dict(zip((str(s) for s in table.ids()), np.asarray(table.sum(axis="sample")).ravel()))


def suggest_depth(table, keep_fraction=0.9):
    """A rarefaction depth that keeps at least `keep_fraction` of the samples.

    The depth is the reads of the sample at the (1 - keep_fraction) quantile, so the shallowest 10% of samples
    are the most that are left out; users with a depth in mind pass it (--rarefy-depth).
    """
    totals = np.sort(np.asarray(table.sum(axis="sample")).ravel())
    totals = totals[totals > 0]
    if totals.size == 0:
        raise AAMInputError("the table has no reads in any sample.")
    k = int(np.floor((1.0 - keep_fraction) * totals.size))
    return int(totals[min(k, totals.size - 1)])


def rarefy(table, depth, seed=0):
    """Subsample every sample to `depth` reads without replacement; samples with fewer reads are left out.

    Parameters
    ----------
    table : biom.Table
    depth : int
    seed : int

    Returns
    -------
    (biom.Table, list of str)
        The rarefied table (features without reads removed) and the IDs of samples left out.
    """
    depth = int(depth)
    if depth < 1:
        raise AAMInputError(f"rarefaction depth must be at least 1, got {depth}.")
    depths = sample_depths(table)
    dropped = sorted(s for s, d in depths.items() if d < depth)
    if len(dropped) == len(depths):
        raise AAMInputError(f"every sample has fewer than {depth} reads (the deepest has {int(max(depths.values()))});"
                            " choose a smaller {opt:rarefy_depth}.")
    import biom
    import scipy.sparse as sp

    from aam.data.dataset import rarefy_counts
    # each sample's draw is a multivariate hypergeometric over its features, which needs memory for the features
    # only (biom's subsample expands every read, so a sample of 1e9 reads would need gigabytes), keyed by the
    # seed and the sample's position so it does not depend on the other samples
    matrix = table.matrix_data.tocsc()  # [F, N]
    ids = [str(s) for s in table.ids()]
    kept, columns = [], []
    for j, sample in enumerate(ids):
        if depths[sample] < depth:
            continue
        start, end = matrix.indptr[j], matrix.indptr[j + 1]
        rows, counts = matrix.indices[start:end], np.rint(matrix.data[start:end]).astype(np.int64)
        drawn = rarefy_counts(counts, depth, np.random.default_rng([int(seed) & 0xFFFFFFFF, j]))
        columns.append(sp.csc_matrix((drawn, (rows, np.zeros_like(rows))), shape=(matrix.shape[0], 1)))
        kept.append(sample)
    rare = biom.Table(sp.hstack(columns).tocsr().astype(np.float64), list(table.ids("observation")), kept,
                      observation_metadata=None, sample_metadata=None)
    return rare.remove_empty(axis="observation", inplace=False), dropped
