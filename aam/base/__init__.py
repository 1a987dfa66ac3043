"""The shipped sample-level base: a base pretrained on a public corpus of human samples and shipped with AAM.

    corpus.py    American Gut + PGP merged on OTU IDs (read from the shared data folder at build time)
    unifrac.py   unweighted UniFrac of one batch from the tree (no N x N matrix)
    pretrain.py  corpus pretraining (``make base``): per-batch distances, random read truncations
    export.py    a run -> ``aam/assets/bases/<name>/`` (weights, manifest, model card from model_card.py)
    shipped.py   loading by name with checksums; what fit-regressor / fit-classifier / pretrain start from

This module stays free of torch and scikit-learn: `aam.options` reads `SHIPPED_BASES` from it.
"""

#: bases a user can name with the ``base`` option (``none`` = no shipped base)
SHIPPED_BASES = ("ag-pgp-v4",)
