"""Sample-level bases shipped inside the package: files, checksums, loading by name, the reads they expect.

A base is a directory ``aam/assets/bases/<name>/`` holding

    model.pt        the pretrained base, an AAM checkpoint (tensors + JSON record, its own digest; no optimizer)
    base.json       name, corpus, read length and truncations trained on, the reference encoder beneath it
    metrics.json    validation metrics of the run, with the command that built it
    history.tsv     the run's epochs
    MODEL_CARD.md   corpus, objectives, metrics, license
    LICENSE         CC BY-SA 3.0 (derived from Greengenes) and the American Gut tables' BSD-3 terms
    manifest.json   {"name", "format_version", "files": {file name: sha256}}

Every load recomputes the SHA-256 of each file the manifest lists and refuses a mismatch, then loads model.pt
with `aam.checkpoint.load_checkpoint` (``weights_only``, record and digest checked). This is the pattern of the
reference encoder (`aam.reference.shipped`) one level up.
"""
import json
import os
from dataclasses import dataclass

from aam.base import SHIPPED_BASES
from aam.errors import AAMInputError, preview, warn

BASES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "bases")
FORMAT_VERSION = 1
MODEL_FILE = "model.pt"
META_FILE = "base.json"


class BaseIntegrityError(AAMInputError):
    """A shipped base's files do not match their checksums (corrupted or modified installation)."""


@dataclass
class ShippedBase:
    """A shipped base, loaded and checked.

    Attributes
    ----------
    name : str
    checkpoint : aam.checkpoint.Checkpoint
        The pretrained base (kind 'encoder').
    sha256 : str
        Checksum of model.pt.
    meta : dict
        base.json: ``read_length``, ``truncations``, ``corpus``, ``asv_encoder``.
    """

    name: str
    checkpoint: object
    sha256: str
    meta: dict

    @property
    def read_length(self):
        return int(self.meta["read_length"])

    @property
    def shortest_read(self):
        """The shortest read length the base was trained on."""
        return int(min([self.read_length] + list(self.meta.get("truncations", []))))

    def provenance(self):
        """What a model built on it records (``pretrained_encoder["shipped_base"]``)."""
        return {"name": self.name, "sha256": self.sha256, "read_length": self.read_length,
                "corpus": self.meta.get("corpus")}


def available_bases():
    """Names of the bases installed with this copy of q2-aam (sorted)."""
    if not os.path.isdir(BASES_DIR):
        return []
    return sorted(d for d in os.listdir(BASES_DIR) if os.path.isfile(os.path.join(BASES_DIR, d, "manifest.json")))


def base_dir(name):
    """Directory of the shipped base `name`."""
    path = os.path.join(BASES_DIR, str(name))
    if os.sep in str(name) or not os.path.isfile(os.path.join(path, "manifest.json")):
        installed = available_bases()
        if name in SHIPPED_BASES:
            raise AAMInputError(f"{{opt:base}} {name}: this copy of q2-aam does not include the base (no "
                                f"{path}/manifest.json); build it with `make base` in the source tree, or pass "
                                "{opt:base} none.")
        raise AAMInputError(f"{{opt:base}} {name!r} is not a shipped base; installed: "
                            f"{preview(installed) if installed else 'none'}.")
    return path


def read_manifest(directory):
    """The manifest of a base directory, after checking every listed file against its SHA-256."""
    from aam.reference.shipped import sha256_file
    path = os.path.join(directory, "manifest.json")
    with open(path) as fh:
        manifest = json.load(fh)
    name = manifest.get("name", os.path.basename(directory))
    if MODEL_FILE not in manifest.get("files", {}):
        raise BaseIntegrityError(f"{path} does not list {MODEL_FILE} with a checksum; rebuild the base (make base).")
    for file_name, expected in sorted(manifest["files"].items()):
        file_path = os.path.join(directory, file_name)
        if not os.path.isfile(file_path):
            raise BaseIntegrityError(f"base {name!r} is incomplete: {file_path} is missing. Reinstall q2-aam or "
                                     "rebuild the base (make base).")
        actual = sha256_file(file_path)
        if actual != expected:
            raise BaseIntegrityError(
                f"base {name!r}: {file_path} does not match its checksum (sha256 {actual[:16]}..., expected "
                f"{expected[:16]}... from manifest.json); the file is corrupted or was modified. Reinstall q2-aam or "
                "rebuild the base (make base).")
    return manifest


def load_base(name):
    """The shipped base `name`, checksums verified.

    Raises
    ------
    BaseIntegrityError
        A file is missing or differs from its checksum.
    AAMInputError
        Unknown or uninstalled name, or a model.pt that is not a pretrained base.
    """
    from aam.checkpoint import load_checkpoint
    directory = base_dir(name)
    manifest = read_manifest(directory)
    with open(os.path.join(directory, META_FILE)) as fh:
        meta = json.load(fh)
    checkpoint = load_checkpoint(os.path.join(directory, MODEL_FILE), expect="encoder")
    return ShippedBase(name, checkpoint, manifest["files"][MODEL_FILE], meta)


def starting_base(opts, pretrained=None):
    """The shipped base ``opts.base`` asks for (None for none); refused together with a pretrained model."""
    if opts.base == "none":
        return None
    if pretrained is not None:
        raise AAMInputError(f"{{opt:base}} {opts.base} and {{input:pretrained}} both name a starting point; pass "
                            "one of them.")
    return load_base(opts.base)


def check_reads(prepared, shipped):
    """Warn when a table's reads are not what `shipped` was trained on: another region (the reference encoder's
    check), or most reads shorter than the shortest length it saw. Longer reads are cut to its read length (the
    table's report says how many)."""
    from aam.reference.selected import check_region
    encoder = (shipped.checkpoint.record.asv_encoder or {}).get("name")
    check_region(prepared.sequences, encoder)
    lengths = [len(s) for s in prepared.sequences]
    short = sum(n < shipped.shortest_read for n in lengths)
    if lengths and short > len(lengths) / 2:
        warn(f"{short} of {len(lengths)} reads are shorter than {shipped.shortest_read} nt, the shortest read length "
             f"the base {shipped.name} was trained on ({shipped.read_length} nt reads and truncations to "
             f"{'/'.join(map(str, shipped.meta.get('truncations', [])))} nt); its sample embeddings of this table are "
             "less reliable.", stacklevel=4)
