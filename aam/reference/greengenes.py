"""The reference the encoder learns from: Greengenes 13_8 97% OTUs (sequences, 7-rank taxonomy, tree).

The files come from the PyPI package ``qiime-default-reference`` (Greengenes 13_8, CC BY-SA 3.0, McDonald et al.
2012), needed only to rebuild the encoder; any FASTA / taxonomy TSV / Newick triple of the same layout works
(the tests use a small slice under ``tests/data/reference-slice``).

Also here:

* `TreeDistances`: patristic distances between arbitrary pairs of tips of a 99k-tip tree, vectorized, without a
  full distance matrix (distance = depth(a) + depth(b) - 2 depth(lca(a, b)), the LCA found by a range-minimum
  query over the tree's balanced-parentheses excess);
* `holdout_split`: a seeded split of the OTUs into training, validation, held-out OTUs and held-out genera.
"""
import gzip
import os

import numpy as np

from aam.errors import AAMInputError
from aam.ranks import RANKS  # noqa: F401 (the heads predict these ranks)

_RANK_PREFIXES = ("k__", "p__", "c__", "o__", "f__", "g__", "s__")


def reference_paths():
    """Paths of the Greengenes 13_8 97% OTU files of the installed ``qiime-default-reference`` package.

    Returns
    -------
    dict
        ``{"sequences": ..., "taxonomy": ..., "tree": ...}``.

    Raises
    ------
    AAMInputError
        When the package is not installed (it is a build-time dependency of the encoder only).
    """
    try:
        import qiime_default_reference as qdr
    except ImportError:
        raise AAMInputError(
            "rebuilding the encoder needs the Greengenes 13_8 reference from the PyPI package "
            "'qiime-default-reference': run `make encoder` (installs it into .venv) or "
            "`pip install qiime-default-reference`, or pass --sequences/--taxonomy/--tree.") from None
    return {"sequences": qdr.get_reference_sequences(), "taxonomy": qdr.get_reference_taxonomy(),
            "tree": qdr.get_reference_tree()}


def _open_text(path):
    if not os.path.exists(path):
        raise AAMInputError(f"reference file {path!r} does not exist.")
    return gzip.open(path, "rt") if str(path).endswith(".gz") else open(path)


def read_sequences(path):
    """FASTA (optionally gzipped) -> dict of ID -> upper-case sequence (ID = first word of the header)."""
    out, name, parts = {}, None, []
    with _open_text(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            if line.startswith(">"):
                if name is not None:
                    out[name] = "".join(parts).upper()
                name, parts = line[1:].split()[0], []
            elif name is None:
                raise AAMInputError(f"{path} is not FASTA: sequence text before the first '>' header.")
            else:
                parts.append(line)
    if name is not None:
        out[name] = "".join(parts).upper()
    if not out:
        raise AAMInputError(f"reference sequence file {path!r} holds no sequences.")
    return out


def parse_lineage(text):
    """Greengenes lineage -> 7 labels, one per rank; None for an empty rank.

    Each label is the lineage down to that rank (``k__Bacteria; ...; g__Bacillus``), so that a name used in two
    places of the taxonomy (a genus name under two families) stays two classes. A rank is empty when its name is
    missing (``g__`` with nothing after it); every rank below an empty one is empty too.

    Examples
    --------
    >>> parse_lineage("k__Bacteria; p__Firmicutes; c__; o__; f__; g__; s__")[:3]
    ['k__Bacteria', 'k__Bacteria; p__Firmicutes', None]
    """
    parts = [p.strip() for p in str(text).split(";")]
    labels, lineage, open_ = [], [], True
    for i, prefix in enumerate(_RANK_PREFIXES):
        part = parts[i] if i < len(parts) else ""
        name = part[len(prefix):].strip() if part.startswith(prefix) else part
        if not name or not open_:
            open_ = False
            labels.append(None)
            continue
        lineage.append(f"{prefix}{name}")
        labels.append("; ".join(lineage))
    return labels


def read_taxonomy(path):
    """Taxonomy TSV (``ID<TAB>k__...; p__...; ...``, optionally gzipped) -> dict ID -> 7 labels (see parse_lineage)."""
    out = {}
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\n\r")
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                raise AAMInputError(f"{path}, line {lineno}: expected 'ID<TAB>lineage'.")
            if fields[0] in ("Feature ID", "id"):  # a QIIME 2 taxonomy header
                continue
            out[fields[0].strip()] = parse_lineage(fields[1])
    return out


def read_tree(path):
    """Newick (optionally gzipped) -> `bp.BP` (the balanced-parentheses tree of unifrac; parses 99k tips in 0.3 s)."""
    import bp
    with _open_text(path) as fh:
        text = fh.read().strip()
    try:
        return bp.parse_newick(text)
    except Exception as err:
        raise AAMInputError(f"{path} is not a Newick tree: {err}") from None


class TreeDistances:
    """Patristic (branch-length) distances between tips, for any pairs, in O(1) per pair after O(n log n) setup.

    In the balanced-parentheses (BP) layout a node is an opening parenthesis, its subtree the span up to its
    closing one, and the excess (opens minus closes so far) is the node depth. Between the opening positions of
    two tips, the position of minimum excess belongs to their lowest common ancestor: either the LCA's own
    opening or the closing of one of its children. So each position is given the root-to-node branch length of
    the node it belongs to in that sense (its own for an opening, its parent's for a closing), and a sparse table
    answers range-argmin queries for whole arrays of pairs at once.

    Parameters
    ----------
    tree : bp.BP
    names : list of str
        Tips to index; `distances` takes positions in this list.

    Raises
    ------
    AAMInputError
        When a name is not a tip of the tree.
    """

    def __init__(self, tree, names):
        B = np.asarray(tree.B, dtype=bool)                                 # [P] True = opening
        P = len(B)
        self.excess = np.cumsum(np.where(B, 1, -1)).astype(np.int32)       # [P]
        owner_depth = np.zeros(P, dtype=np.float64)                        # [P]
        tip_position = {}
        stack = []
        lengths_ok = True
        for i in range(P):
            if B[i]:
                parent_depth = owner_depth[stack[-1]] if stack else 0.0
                length = tree.length(i) if stack else 0.0  # the root's own length is not a path length
                if length is None or not np.isfinite(length):
                    lengths_ok = False
                    length = 0.0
                owner_depth[i] = parent_depth + length
                stack.append(i)
                if i + 1 < P and not B[i + 1]:
                    name = tree.name(i)
                    if name is not None:
                        tip_position[str(name)] = i
            else:
                stack.pop()
                owner_depth[i] = owner_depth[stack[-1]] if stack else 0.0
        if not lengths_ok:
            raise AAMInputError("the reference tree has branches without lengths; patristic distances need them.")
        missing = [n for n in names if n not in tip_position]
        if missing:
            raise AAMInputError(f"{len(missing)} of {len(names)} reference IDs are not tips of the tree, e.g. "
                                f"{missing[:3]}; use the tree made with these sequences.")
        self.names = list(names)
        self.owner_depth = owner_depth
        self.positions = np.array([tip_position[n] for n in names], dtype=np.int64)   # [n]
        # sparse table: table[k, i] = argmin of excess over [i, i + 2^k)
        levels = [np.arange(P, dtype=np.int32)]
        k = 1
        while (1 << k) <= P:
            prev = levels[-1]
            half = 1 << (k - 1)
            a, b = prev[:P - half], prev[half:]
            nxt = prev.copy()
            nxt[:P - half] = np.where(self.excess[a] <= self.excess[b], a, b)
            levels.append(nxt)
            k += 1
        self.table = np.stack(levels)                                      # [K, P]

    def __len__(self):
        return len(self.names)

    def depth(self, index):
        """Root-to-tip branch length of tips `index` (positions in `names`)."""
        return self.owner_depth[self.positions[np.asarray(index)]]

    def distances(self, i, j):
        """Patristic distances between tips ``i[k]`` and ``j[k]`` (positions in `names`), elementwise.

        Parameters
        ----------
        i, j : array-like of int, same shape

        Returns
        -------
        np.ndarray of float64, the shape of `i`
        """
        pi = self.positions[np.asarray(i)]
        pj = self.positions[np.asarray(j)]
        lo, hi = np.minimum(pi, pj), np.maximum(pi, pj)
        k = np.floor(np.log2(hi - lo + 1)).astype(np.int64)
        a = self.table[k, lo]
        b = self.table[k, hi - (1 << k) + 1]
        m = np.where(self.excess[a] <= self.excess[b], a, b)
        return self.owner_depth[pi] + self.owner_depth[pj] - 2.0 * self.owner_depth[m]

    def pairwise(self, index):
        """Distance matrix between the tips `index`: [n, n] float64."""
        index = np.asarray(index)
        ii, jj = np.meshgrid(index, index, indexing="ij")
        return self.distances(ii, jj)


def holdout_split(ids, taxonomy, seed=0, genus_fraction=0.05, otu_fraction=0.02, n_validation=1000):
    """Seeded split of reference OTUs into training / validation / held-out OTUs / held-out genera.

    Whole genera are held out first (a fraction of the named genera, all their OTUs), then single OTUs at random
    from the rest, then a validation set (used only to watch training). The split depends only on the sorted
    IDs, their genus labels and the seed.

    Parameters
    ----------
    ids : list of str
        OTUs to split (those with an amplicon).
    taxonomy : dict of str -> list
        7 labels per ID (see `parse_lineage`); IDs without one count as unnamed.
    seed : int
    genus_fraction, otu_fraction : float
    n_validation : int

    Returns
    -------
    dict of str -> list of str
        ``train``, ``validation``, ``heldout_otus``, ``heldout_genera`` (OTU IDs, sorted) and ``genera`` (the
        held-out genus labels, sorted).
    """
    ids = sorted(set(map(str, ids)))
    rng = np.random.default_rng([int(seed), 1013])
    genus_of = {i: (taxonomy.get(i) or [None] * 7)[5] for i in ids}
    genera = sorted({g for g in genus_of.values() if g is not None})
    n_genera = int(round(genus_fraction * len(genera)))
    held_genera = set(rng.choice(genera, size=n_genera, replace=False).tolist()) if n_genera else set()
    heldout_genera = [i for i in ids if genus_of[i] in held_genera]
    rest = [i for i in ids if genus_of[i] not in held_genera]
    n_otus = int(round(otu_fraction * len(rest)))
    order = rng.permutation(len(rest))
    heldout_otus = sorted(rest[k] for k in order[:n_otus])
    validation = sorted(rest[k] for k in order[n_otus:n_otus + int(n_validation)])
    taken = set(heldout_otus) | set(validation)
    train = [i for i in rest if i not in taken]
    return {"train": train, "validation": validation, "heldout_otus": heldout_otus,
            "heldout_genera": heldout_genera, "genera": sorted(held_genera)}


def write_holdout(split, path):
    """Write a split as TSV (``otu_id<TAB>set``) for every non-training OTU, plus the held-out genus labels."""
    from aam.checkpoint import atomic_write

    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write("# seeded hold-out of the reference encoder; every OTU not listed here was trained on\n")
            fh.write("otu_id\tset\n")
            for key in ("validation", "heldout_otus", "heldout_genera"):
                for otu in split[key]:
                    fh.write(f"{otu}\t{key}\n")
            for genus in split["genera"]:
                fh.write(f"# heldout genus\t{genus}\n")
    atomic_write(path, write)
