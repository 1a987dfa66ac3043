"""The encoder directories shipped in ``aam/assets/encoders/``: where they are, their manifests and checksums.

This is the file layer under `aam.reference.shipped` (weights, embedding) and `aam.reference.region` (the region
check reads ``region.json``); both import it, and `shipped` re-exports its names, so neither of the two needs the
other to find or verify an encoder's files.
"""
import hashlib
import json
import os

from aam.errors import AAMInputError

DEFAULT_ENCODER = "gg13_8-v4-d64"
ENCODERS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "encoders")


class EncoderIntegrityError(AAMInputError):
    """A shipped encoder's files do not match their checksums (corrupted or modified installation)."""


def available_encoders():
    """Names of the encoders shipped with this installation (sorted)."""
    if not os.path.isdir(ENCODERS_DIR):
        return []
    return sorted(d for d in os.listdir(ENCODERS_DIR)
                  if os.path.isfile(os.path.join(ENCODERS_DIR, d, "manifest.json")))


def encoder_dir(name=DEFAULT_ENCODER):
    """Directory of the encoder `name` (a shipped name, or the path of a directory with a manifest.json)."""
    if name is None:
        name = DEFAULT_ENCODER
    candidate = os.fspath(name)
    if os.path.isfile(os.path.join(candidate, "manifest.json")):
        return os.path.abspath(candidate)
    path = os.path.join(ENCODERS_DIR, candidate)
    if os.sep in candidate or not os.path.isfile(os.path.join(path, "manifest.json")):
        shipped = available_encoders()
        raise AAMInputError(f"no encoder {candidate!r}: use one of the shipped encoders "
                            f"({', '.join(shipped) or 'none installed'}) or a directory with a manifest.json.")
    return path


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(directory):
    """The manifest of an encoder directory, after checking every listed file against its SHA-256.

    Raises
    ------
    EncoderIntegrityError
        A file is missing or its checksum differs.
    """
    with open(os.path.join(directory, "manifest.json")) as fh:
        manifest = json.load(fh)
    name = manifest.get("name", os.path.basename(directory))
    for file_name, expected in sorted(manifest.get("files", {}).items()):
        path = os.path.join(directory, file_name)
        if not os.path.isfile(path):
            raise EncoderIntegrityError(f"encoder {name!r} is incomplete: {path} is missing. Reinstall q2-aam.")
        actual = sha256_file(path)
        if actual != expected:
            raise EncoderIntegrityError(
                f"encoder {name!r}: {path} does not match its checksum (sha256 {actual[:16]}..., expected "
                f"{expected[:16]}... from manifest.json); the file is corrupted or was modified. Reinstall q2-aam "
                "or rebuild the encoder (make encoder).")
    return manifest


def load_region(name=DEFAULT_ENCODER):
    """The region.json of an encoder (checksums verified)."""
    directory = encoder_dir(name)
    read_manifest(directory)
    with open(os.path.join(directory, "region.json")) as fh:
        return json.load(fh)


#: the most a shipped model directory (a reference encoder, a base) may weigh, every file included
MAX_SHIPPED_BYTES = 10 * 1024 * 1024


def write_json(path, obj):
    """Write `obj` to `path` as indented, key-sorted JSON, atomically."""
    from aam.checkpoint import atomic_write

    def write(tmp):
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=1, sort_keys=True)
            fh.write("\n")
    atomic_write(path, write)


def seal(dest, name, format_version, files):
    """Finish a shipped directory: its manifest (the SHA-256 of every file, checked on every load), files readable by
    everyone, and the size budget.

    Returns
    -------
    (dict, int)
        The manifest and the directory's size in bytes.

    Raises
    ------
    RuntimeError
        Over `MAX_SHIPPED_BYTES`.
    """
    manifest = {"name": name, "format_version": format_version,
                "files": {f: sha256_file(os.path.join(dest, f)) for f in files}}
    write_json(os.path.join(dest, "manifest.json"), manifest)
    for f in list(files) + ["manifest.json"]:
        os.chmod(os.path.join(dest, f), 0o644)  # atomic_write's temporary files are private (0600)
    total = sum(os.path.getsize(os.path.join(dest, f)) for f in os.listdir(dest))
    if total > MAX_SHIPPED_BYTES:
        raise RuntimeError(f"{dest} holds {total / 1e6:.1f} MB, over the {MAX_SHIPPED_BYTES / 1e6:.0f} MB budget")
    return manifest, total
