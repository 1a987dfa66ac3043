"""aam: Attention All Microbes, a transformer over 16S amplicon data (nucleotides -> ASVs -> samples).

The engine behind the q2-aam QIIME 2 plugin and the standalone ``aam`` command. It never imports qiime2.
"""

__version__ = "0.1.0"
