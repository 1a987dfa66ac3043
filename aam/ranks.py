"""The ranks of a Greengenes-style lineage (``k__Bacteria; p__Firmicutes; ...; s__``), kingdom first.

Defined once, below everything that reads lineages: the option table (importance groups at a rank), the data
pipeline (taxonomy labels), the reference encoder's heads and the feature groups of importance.
"""
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
