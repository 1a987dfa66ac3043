"""Guards around the files aam opens and writes: archive caps, size bounds, output places, warnings.

One layer for the three ways a file can hurt a run:

- **Archives** (`check_archive`, `read_archive_member`): every zip this project opens itself (the zip inside a
  ``model.pt``, a ``.qza`` the ``aam`` command line reads without QIIME 2) is measured from its central directory
  before anything is unpacked: at most `MAX_MEMBERS` members, `MAX_MEMBER_BYTES` per member and
  `MAX_TOTAL_BYTES` in all once unpacked, and no member larger than `MAX_RATIO` times its compressed size (a
  decompression bomb). Members are then read with the cap enforced on the bytes actually produced.
- **Records** (`bound_architecture`): the sizes a model record claims (layers, widths, covariate columns) are
  bounded by the weights actually present before any module is built, so a record claiming 10,000 layers costs
  nothing before it is refused.
- **Output places** (`open_lock`, `refuse_symlinks`, `check_writable`): a run's lock is opened without following
  a symlink, symlinked run members are refused, and a place that cannot be written is named before any work.

It is torch-free except `require_safe_torch`, which imports torch only to read its version.
"""
import contextlib
import errno
import os
import stat
import tempfile
import warnings
import zipfile

from aam.errors import AAMInputError

#: most members of an archive aam opens itself
MAX_MEMBERS = 10_000
#: most bytes of one member once unpacked (2 GiB)
MAX_MEMBER_BYTES = 2 * 1024 ** 3
#: most bytes of all members once unpacked (4 GiB)
MAX_TOTAL_BYTES = 4 * 1024 ** 3
#: largest unpacked / compressed size of one member (deflate reaches ~1000:1 on crafted data; real tables, FASTA,
#: Newick and model tensors stay far below 100:1)
MAX_RATIO = 100
#: members this small are exempt from the ratio check (an empty or tiny file compresses "infinitely")
RATIO_EXEMPT_BYTES = 1024 ** 2
#: oldest torch whose ``torch.load(weights_only=True)`` is safe on untrusted files (CVE-2025-32434)
SAFE_TORCH = (2, 6)


def _size(n):
    """Bytes in the unit a person reads (e.g. '3.0 GB')."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} GB"


def archive_limits():
    """The caps of `check_archive` as one sentence (for messages and documentation)."""
    return (f"at most {MAX_MEMBERS:,} members, {_size(MAX_MEMBER_BYTES)} per member and {_size(MAX_TOTAL_BYTES)} "
            f"in all once unpacked, and no member expanding more than {MAX_RATIO}-fold")


def _check_member(info, path, what):
    """Raise AAMInputError when one member of an archive breaks a cap."""
    if info.file_size > MAX_MEMBER_BYTES:
        raise AAMInputError(f"{what} {path!r}: member {info.filename!r} unpacks to {_size(info.file_size)}, above "
                            f"the {_size(MAX_MEMBER_BYTES)} aam accepts per member; the archive is damaged or "
                            "crafted (aam reads archives with " + archive_limits() + ").")
    if info.file_size > RATIO_EXEMPT_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        ratio = info.file_size // max(info.compress_size, 1)
        raise AAMInputError(f"{what} {path!r}: member {info.filename!r} expands {ratio:,}-fold "
                            f"({_size(info.compress_size)} to {_size(info.file_size)}), a decompression bomb; aam "
                            "reads archives with " + archive_limits() + ".")


def check_archive(path, what="archive", require_zip=True):
    """Measure a zip archive from its central directory, before anything in it is unpacked.

    Parameters
    ----------
    path : str
        The archive.
    what : str
        What the file is, for the message (e.g. ``'model'``, ``'--table'``).
    require_zip : bool
        Whether a file that is no zip archive at all is an error (else: nothing to measure, an empty list; torch's
        legacy files are not zips and are not compressed either).

    Returns
    -------
    list of zipfile.ZipInfo
        The members, when every cap holds.

    Raises
    ------
    AAMInputError
        Too many members, a member or the total too large once unpacked, or a member expanding more than
        `MAX_RATIO`-fold; or the file is not a zip archive.
    """
    if not require_zip and not zipfile.is_zipfile(path):
        return []
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as err:
        raise AAMInputError(f"{what} {path!r} is not a readable zip archive ({err}); it is damaged or not the "
                            "kind of file expected.") from None
    except OSError as err:
        raise AAMInputError(_os_message(err, path, f"read {what} {path!r}")) from None
    if len(infos) > MAX_MEMBERS:
        raise AAMInputError(f"{what} {path!r} holds {len(infos):,} members, more than the {MAX_MEMBERS:,} aam "
                            "accepts; the archive is damaged or crafted.")
    total = 0
    for info in infos:
        _check_member(info, path, what)
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        raise AAMInputError(f"{what} {path!r} unpacks to {_size(total)}, above the {_size(MAX_TOTAL_BYTES)} aam "
                            "accepts; the archive is damaged or crafted (aam reads archives with "
                            + archive_limits() + ").")
    return infos


def read_archive_member(zf, info, path, what="archive"):
    """The bytes of one member, never more than its stated size (and the caps) however the data really inflates.

    Parameters
    ----------
    zf : zipfile.ZipFile
    info : zipfile.ZipInfo
        A member that passed `check_archive`.
    path, what : str
        For the message.

    Returns
    -------
    bytes
    """
    _check_member(info, path, what)
    limit = min(info.file_size, MAX_MEMBER_BYTES)
    chunks, size = [], 0
    with zf.open(info) as fh:
        while True:
            chunk = fh.read(1024 ** 2)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise AAMInputError(f"{what} {path!r}: member {info.filename!r} unpacks to more than the "
                                    f"{_size(limit)} its archive states; the archive is damaged or crafted.")
            chunks.append(chunk)
    return b"".join(chunks)


def load_torch_file(path, map_location="cpu"):
    """``torch.load(weights_only=True)`` of a model file, after every check that needs no unpickling.

    The file must exist, be a zip archive as ``torch.save`` writes (AAM never wrote torch's legacy format) within
    the caps of `check_archive`, and torch must be one whose ``weights_only`` loading is safe. Whatever torch still
    refuses (Python objects other than tensors, a damaged member) is reported in one line.

    Returns
    -------
    object
        The loaded payload (tensors and plain containers only).
    """
    import torch
    if os.path.isdir(path):
        raise AAMInputError(f"{path!r} is a directory, not a model file; pass its model.pt.")
    if not os.path.isfile(path):
        raise AAMInputError(f"checkpoint {path!r} does not exist")
    require_safe_torch()
    if os.path.getsize(path) == 0:
        raise AAMInputError(f"{path!r} is not a readable AAM checkpoint: the file is empty. Use an intact copy of the "
                            "model.")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            damaged_zip = fh.read(4) == b"PK\x03\x04"
        raise AAMInputError(f"{path!r} is not a readable AAM checkpoint: " + (
            "its zip archive is damaged (cut short?)" if damaged_zip else "it is not the zip archive torch.save "
            "writes") + ". Use an intact copy of the model.")
    check_archive(path, "model file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for damaged content
        if type(err).__name__ == "UnpicklingError":  # weights_only met a Python object: refused, never built
            raise AAMInputError(f"{path!r} is not a readable AAM checkpoint: it holds Python objects other than "
                                "tensors and plain data, and such files are refused (loading them could run code "
                                "from the file).") from None
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise AAMInputError(f"{path!r} is not a readable AAM checkpoint: torch cannot read it ({type(err).__name__}"
                            f"{': ' + first if first else ''}); the file is damaged. Use an intact copy of the "
                            "model.") from None


def require_safe_torch(version=None):
    """Refuse a torch older than 2.6, whose ``weights_only`` loading can run code from a file (CVE-2025-32434).

    The install pins torch >= 2.6, but an existing environment may hold an older one.
    """
    if version is None:
        import torch
        version = torch.__version__
    parts = []
    for piece in str(version).split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    if tuple(parts) < SAFE_TORCH:
        raise AAMInputError(f"torch {version} is installed, but reading model files safely needs torch >= "
                            f"{SAFE_TORCH[0]}.{SAFE_TORCH[1]} (older torch.load can run code from a file, "
                            "CVE-2025-32434); upgrade it: pip install 'torch>=2.6'.")


# ---- sizes a model record claims ---------------------------------------------------------------------------------
def _claimed_sizes(architecture):
    """(counts, widths) of an architecture: how many modules it builds per kind, and every table / layer width."""
    enc = getattr(architecture, "encoder", architecture)
    counts = {"attention_layers": int(enc.attention_layers)}
    widths = {"embedding_dim": int(enc.embedding_dim), "max_bp + 1": int(enc.max_bp) + 1,
              "token_limit": int(enc.token_limit), "taxonomy_classes": int(enc.taxonomy_classes),
              "ff_mult x embedding_dim": int(enc.ff_mult) * int(enc.embedding_dim)}
    if enc is not architecture:  # a predictor's head
        counts["head_layers"] = int(architecture.head_layers)
        counts["categorical columns"] = len(architecture.categorical_cardinalities)
        widths["out_dim"] = int(architecture.out_dim)
        for column, n in architecture.categorical_cardinalities.items():
            widths[f"categorical_cardinalities[{column!r}]"] = int(n)
            widths[f"categorical_embed_dims[{column!r}]"] = architecture.embed_dim(column)
        if architecture.head == "transformer" and architecture.numeric_inputs:
            widths["numeric_inputs"] = int(architecture.numeric_inputs)   # the projection's input width
    return counts, widths


def bound_architecture(architecture, weights, where):
    """Refuse a record whose sizes could not fit the weights present, before any module is built.

    Every layer the architecture builds holds at least one tensor, and every width it names is the size of some
    tensor's dimension, so a record claiming more layers than there are tensors, or a width larger than every
    dimension present, cannot describe these weights. Checking that first keeps a crafted record (say 10,000
    layers: 1.2 GB of Python module objects even on PyTorch's meta device) from costing anything.

    Parameters
    ----------
    architecture : aam.models.config.EncoderConfig or PredictorConfig
    weights : dict of str -> tensor-like
        Anything with a ``shape``.
    where : str
        The file, for the message.
    """
    n_tensors = len(weights)
    largest = max((int(d) for v in weights.values() for d in tuple(v.shape)), default=0)
    counts, widths = _claimed_sizes(architecture)
    for name, n in counts.items():
        if n > n_tensors:
            raise AAMInputError(f"{where!r}: the model record claims {n:,} {name}, but the file holds only "
                                f"{n_tensors} weight tensors; the record was edited or belongs to another model.")
    for name, n in widths.items():
        if n > max(largest, 1):
            raise AAMInputError(f"{where!r}: the model record claims {name} = {n:,}, larger than any dimension "
                                f"of the weights in the file ({largest:,}); the record was edited or belongs to "
                                "another model.")


# ---- output places -------------------------------------------------------------------------------------------------
def open_lock(path):
    """Open (or create) a lock file without following a symlink; refuse anything but a regular file.

    Returns
    -------
    file object
        Open for reading and writing.
    """
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | \
        getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP or os.path.islink(path):
            raise AAMInputError(f"the run lock {path!r} is a symlink; aam never writes through one. Remove it "
                                "(nothing of a run is a symlink) or choose another {opt:output_dir}.") from None
        raise AAMInputError(_os_message(err, path, f"create the run lock {path!r}")) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise AAMInputError(f"the run lock {path!r} is not a regular file; remove it or choose another "
                            "{opt:output_dir}.")
    return os.fdopen(fd, "r+")


def refuse_symlinks(directory, names):
    """Refuse a run directory whose members (`names`, relative paths) are symlinks: writing a run into one
    would write, or with ``--overwrite`` delete, files outside the directory."""
    for name in names:
        path = os.path.join(directory, name)
        if os.path.islink(path):
            raise AAMInputError(f"{path!r} is a symlink; aam writes its runs only into real files and folders "
                                "inside {opt:output_dir}. Remove the link or choose another {opt:output_dir}.")


def _existing_ancestor(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_writable(path, what):
    """Refuse, before any work, a file or directory that cannot be created or written.

    Parameters
    ----------
    path : str
        A directory (which may not exist yet) or the file an output will be written to.
    what : str
        How the message names it (e.g. ``'{opt:output_dir}'``, ``'--output'``).
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        folder = path
    elif os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise AAMInputError(f"{what} {path!r} cannot be written (permission denied); make it writable or "
                                "choose another path.")
        folder = os.path.dirname(path)
    else:
        folder = _existing_ancestor(os.path.dirname(path))
    if not os.path.isdir(folder):
        raise AAMInputError(f"{what} {path!r} cannot be created: {folder!r} is a file, not a directory.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".aam-probe-", dir=folder)
    except OSError as err:
        raise AAMInputError(_os_message(err, folder, f"write {what} {path!r} (in {folder!r})")) from None
    os.close(fd)
    os.unlink(probe)


def _os_message(err, path, doing):
    """One line for an operating-system error: what failed (`doing`, which names `path`), why, and what to do."""
    reason = os.strerror(err.errno) if err.errno else str(err)
    fix = {errno.EACCES: "make it writable (or readable) for you or choose another place",
           errno.EPERM: "make it writable (or readable) for you or choose another place",
           errno.EROFS: "the file system is read-only; choose another place",
           errno.ENOSPC: "the disk is full; free space or choose another place",
           errno.EDQUOT: "your disk quota is used up; free space or choose another place"}.get(
        err.errno, "check the path")
    return f"cannot {doing}: {reason}; {fix}."


def os_error_line(err):
    """The one-line message of an `OSError` that reached a front end (permission denied, disk full, ...)."""
    where = "a file" if err.filename is None else repr(os.fspath(err.filename))
    return _os_message(err, err.filename, f"read or write {where}")


# ---- warnings ------------------------------------------------------------------------------------------------------
def plain_warning(message, category, filename, lineno, line=None):
    """``warnings.formatwarning`` that prints a warning as one plain line, without Python's source location."""
    return f"warning: {message}\n"


@contextlib.contextmanager
def plain_warnings():
    """Warnings issued inside the block print as one plain line (``warning: ...``)."""
    saved = warnings.formatwarning
    warnings.formatwarning = plain_warning
    try:
        yield
    finally:
        warnings.formatwarning = saved
