"""q2-aam: Attention All Microbes, a transformer over 16S amplicon data, as a QIIME 2 plugin and a CLI."""
import re

from setuptools import find_packages, setup

with open("aam/__init__.py") as fh:
    VERSION = re.search(r'^__version__ = "([^"]+)"', fh.read(), re.M).group(1)

setup(
    name="q2-aam",
    version=VERSION,
    description="Attention All Microbes: transformer sample embeddings and predictors for 16S amplicon data",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    url="https://github.com/q2-aam/q2-aam",
    packages=find_packages(include=["aam", "aam.*", "q2_aam", "q2_aam.*"]),
    package_data={
        "q2_aam": ["citations.bib", "assets/*", "assets/**/*"],
        # the shipped reference encoders: weights, region signature, manifest, model card, metrics, hold-out
        "aam": ["assets/encoders/*/*", "assets/bases/*/*"],
    },
    python_requires=">=3.8",
    # Loose bounds on purpose: they must be met by Debian bookworm's QIIME 2 2022.11 packages and by current
    # QIIME 2 conda environments without pip replacing numpy/pandas/scikit-bio. biom-format (and h5py) are
    # not listed although the engine uses them: QIIME 2 loads plugins through pkg_resources, which resolves
    # these requirements recursively, and Debian's biom-format requires an "h5py" distribution that Debian
    # ships under another name, so listing biom-format would stop every `qiime` command. q2-types requires
    # biom-format anyway, and recipe/meta.yaml lists the full run requirements for conda.
    install_requires=[
        "numpy>=1.21",
        "pandas>=1.3",
        "scipy>=1.7",
        "scikit-bio>=0.5.7",
        "scikit-learn>=1.0",
        "unifrac>=1.1",
        "matplotlib>=3.5",
        "torch>=2.6",  # torch.load(weights_only=True) is safe from 2.6 on (CVE-2025-32434)
        "tensorboard>=2.10",
        "tqdm>=4.60",
    ],
    # "encoder": what rebuilding the shipped reference encoder needs (make encoder); never needed at run time
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3"], "encoder": ["qiime-default-reference>=0.1.3"]},
    entry_points={
        "qiime2.plugins": ["q2-aam=q2_aam.plugin_setup:plugin"],
        "console_scripts": ["aam=aam.cli:main"],
    },
    zip_safe=False,
)
