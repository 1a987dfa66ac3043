"""Principal coordinates of sample embeddings."""
import numpy as np
import pandas as pd


def ordination(frame_or_space, ids=None, method_name="AAM embedding"):
    """Principal coordinates of embeddings (PCA of the centered embeddings = PCoA of their Euclidean distances).

    Parameters
    ----------
    frame_or_space : pd.DataFrame or array-like
        [N, D] embeddings; a DataFrame's index gives the sample IDs.
    ids : list of str, optional
        Sample IDs when `frame_or_space` is an array.
    method_name : str
        Shown in the ordination's long method name.

    Returns
    -------
    skbio.OrdinationResults
    """
    import skbio
    x = np.asarray(frame_or_space, dtype=np.float64)                 # [N, D]
    ids = list(ids if ids is not None else frame_or_space.index)
    x = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)                  # [N, K], [K]
    eig = s ** 2
    total = eig.sum() if eig.sum() > 0 else 1.0
    axes = [f"PC{i + 1}" for i in range(len(s))]
    samples = pd.DataFrame(u * s, index=ids, columns=axes)
    return skbio.OrdinationResults(short_method_name="PCoA", long_method_name=f"PCoA of {method_name}s",
                                   eigvals=pd.Series(eig, index=axes), samples=samples,
                                   proportion_explained=pd.Series(eig / total, index=axes))
