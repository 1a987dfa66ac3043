"""Registration of the q2-aam plugin: types, formats, actions and visualizers.

No torch and no engine import here: QIIME 2 imports every plugin for every command, so the actions import the
engine when they run.
"""
from qiime2.plugin import Citations, Plugin

import q2_aam

citations = Citations.load("citations.bib", package="q2_aam")

plugin = Plugin(
    name="aam",
    version=q2_aam.__version__,
    website="https://github.com/q2-aam/q2-aam",
    package="q2_aam",
    citations=[citations["cantrell2024aam"], citations["paszke2019pytorch"]],
    short_description="Attention All Microbes: transformer models of 16S amplicon data.",
    description=(
        "Pretrain sample embeddings on UniFrac (or any distance matrix) plus masked-nucleotide prediction, "
        "fine-tune regressors and classifiers on sample metadata, and predict for new samples. The model reads "
        "the ASV sequences themselves, so features unseen in training still contribute."
    ),
)
