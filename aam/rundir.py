"""The files of a training run, and of a model directory (the QIIME 2 model artifact has the same layout).

::

    model.pt                 the model: weights + record, no optimizer state (aam.checkpoint)
    config.json              the same record as readable JSON, with the "aam-checkpoint" marker
    history.tsv              one row per epoch: every loss and metric
    plots/*.png, *.svg       validation figures of the best epoch
    tensorboard/             TensorBoard logs of the run
    checkpoints/             training checkpoints (run directories only, not model directories):
        best_model.pt          weights of the best epoch so far, with the state to resume
        last_checkpoint.pt     the latest epoch, with the state to resume
        final_model.pt         the last epoch's weights

Only this module spells these names. Everything in it but `read_model` is torch-free.
"""
import json
import os
import shutil
import sys
import tempfile

from aam.checkpoint import FORMAT, FORMAT_VERSION, atomic_write_text, format_version
from aam.errors import AAMInputError
from aam.record import ModelRecord


class RunDirectory:
    """A directory holding a run's (or a model's) files.

    Parameters
    ----------
    path : str or os.PathLike
    """

    MODEL = "model.pt"
    CONFIG = "config.json"
    HISTORY = "history.tsv"
    PLOTS = "plots"
    TENSORBOARD = "tensorboard"
    CHECKPOINTS = "checkpoints"

    def __init__(self, path):
        self.path = os.fspath(path)
        self._temporary = None

    @classmethod
    def temporary(cls, prefix="aam-"):
        """A run directory in a new temporary directory, removed by `cleanup` or when this object is collected."""
        tmp = tempfile.TemporaryDirectory(prefix=prefix)
        run = cls(tmp.name)
        run._temporary = tmp
        return run

    @property
    def is_temporary(self):
        return self._temporary is not None

    def cleanup(self):
        """Remove a temporary run directory (no-op for others)."""
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None

    def __repr__(self):
        return f"RunDirectory({self.path!r})"

    # ---- names ------------------------------------------------------------------------------------------------
    def _join(self, *parts):
        return os.path.join(self.path, *parts)

    @property
    def model_file(self):
        return self._join(self.MODEL)

    @property
    def config_file(self):
        return self._join(self.CONFIG)

    @property
    def history_file(self):
        return self._join(self.HISTORY)

    @property
    def plots_dir(self):
        return self._join(self.PLOTS)

    @property
    def tensorboard_dir(self):
        return self._join(self.TENSORBOARD)

    @property
    def checkpoints_dir(self):
        return self._join(self.CHECKPOINTS)

    @property
    def best_checkpoint(self):
        return self._join(self.CHECKPOINTS, "best_model.pt")

    @property
    def last_checkpoint(self):
        return self._join(self.CHECKPOINTS, "last_checkpoint.pt")

    @property
    def final_checkpoint(self):
        return self._join(self.CHECKPOINTS, "final_model.pt")

    def plot_stem(self, name):
        """Path without extension of a figure (`aam.evaluation.plots.save_figure` adds .png and .svg)."""
        return self._join(self.PLOTS, name)

    # ---- owning a directory for a run ---------------------------------------------------------------------------
    LOCK = ".aam-run.lock"
    #: where `claim(overwrite=True)` keeps the previous run until the new one has finished
    REPLACED = ".aam-replaced"
    _RUN_FILES = (MODEL, CONFIG, HISTORY, PLOTS, TENSORBOARD, CHECKPOINTS)
    _CHECKPOINT_FILES = ("best_model.pt", "last_checkpoint.pt", "final_model.pt")

    def existing_run_files(self):
        """Names of the run files already in the directory (a previous run's)."""
        if not os.path.isdir(self.path):
            return []
        return [name for name in self._RUN_FILES if os.path.lexists(self._join(name))]

    def _members(self):
        """Every path of a run, relative to the directory: what a symlink must not stand in for."""
        names = [self.LOCK, self.REPLACED, *self._RUN_FILES]
        names += [os.path.join(self.CHECKPOINTS, n) for n in self._CHECKPOINT_FILES]
        for sub in (self.PLOTS, self.TENSORBOARD):
            folder = self._join(sub)
            if os.path.isdir(folder) and not os.path.islink(folder):
                names += [os.path.join(sub, n) for n in sorted(os.listdir(folder))]
        return names

    def claim(self, resume=False, overwrite=False):
        """Own this directory for a run, until `release`.

        Another run into the same directory at the same time is refused (an advisory lock, respected by every
        aam run), and so is a directory that already holds a run, unless the new run continues it (`resume`) or
        replaces it (`overwrite`). A replaced run is set aside, not deleted: `release` deletes it only once the
        new run has finished, and puts it back when the new run fails, so a failed ``--overwrite`` keeps the
        previous model. The directory must be writable (checked before any work), and no member of a run may be
        a symlink (the lock is opened without following one). Temporary files left by a process killed while
        writing are removed.

        Raises
        ------
        AAMInputError
            The path is a file or cannot be written, a run member is a symlink, another run holds the directory,
            or it holds a finished run.
        """
        from aam.safety import check_writable, open_lock, refuse_symlinks
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise AAMInputError(f"{{opt:output_dir}} {self.path!r} is a file, not a directory; choose a directory "
                                "for the run's outputs.")
        check_writable(self.path, "{opt:output_dir}")
        os.makedirs(self.path, exist_ok=True)
        refuse_symlinks(self.path, self._members())
        self._lock = _lock_file(self._join(self.LOCK), self.path, open_lock)
        self._replacing = False
        try:
            self._recover_interrupted_overwrite(resume)
            existing = self.existing_run_files()
            if existing and not resume and not overwrite:
                raise AAMInputError(
                    f"{{opt:output_dir}} {self.path!r} already holds a run ({', '.join(existing)}). "
                    + self._continue_hint() + "replace it with {opt:overwrite}, or choose a new directory.")
            if overwrite and not resume and existing:
                self._set_aside(existing)
            self._remove_stale_temporaries()
        except BaseException:
            self.release(finished=False)
            raise
        return self

    def _continue_hint(self):
        """How to continue the run in this directory, if it left a checkpoint to continue from."""
        if os.path.isfile(self.last_checkpoint):
            return f"Continue it with {{opt:resume}} {self.last_checkpoint}, "
        return "It left no checkpoint to continue from; "

    def _set_aside(self, names):
        """Move a previous run's files into `REPLACED` (same file system: renames, nothing copied or lost)."""
        aside = self._join(self.REPLACED)
        os.makedirs(aside, exist_ok=True)
        for name in names:
            os.replace(self._join(name), os.path.join(aside, name))
        self._replacing = True

    def _put_back(self):
        """Remove what a failed run wrote and move the previous run back from `REPLACED`."""
        aside = self._join(self.REPLACED)
        for name in self._RUN_FILES:
            if os.path.lexists(os.path.join(aside, name)):
                _remove(self._join(name))
                os.replace(os.path.join(aside, name), self._join(name))
        shutil.rmtree(aside)

    def _recover_interrupted_overwrite(self, resume):
        """A `REPLACED` folder left by a process killed during ``--overwrite``: its run is the last one that
        finished, so it comes back (unless this run resumes the interrupted one, which then owns the swap)."""
        if not os.path.isdir(self._join(self.REPLACED)):
            return
        if resume:
            self._replacing = True
            return
        from aam.errors import warn
        self._put_back()
        warn(f"{self.path!r}: an earlier {{opt:overwrite}} run was interrupted; the run it was replacing is back.")

    def release(self, finished=None):
        """Give up the directory (see `claim`).

        Parameters
        ----------
        finished : bool, optional
            Whether the run finished. A replaced run is deleted only after a finished run and put back after
            a failed one. Default: finished unless an exception is propagating through the caller right now.
        """
        if finished is None:
            finished = sys.exc_info()[0] is None
        if getattr(self, "_replacing", False):
            if finished:
                shutil.rmtree(self._join(self.REPLACED), ignore_errors=True)
            else:
                self._put_back()
            self._replacing = False
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.close()  # closing the file releases the lock
            self._lock = None

    def _remove_stale_temporaries(self):
        from aam.checkpoint import TMP_PREFIX
        for folder in (self.path, self.checkpoints_dir):
            if os.path.isdir(folder):
                for name in os.listdir(folder):
                    if name.startswith(TMP_PREFIX):
                        os.unlink(os.path.join(folder, name))

    # ---- writing --------------------------------------------------------------------------------------------
    def create(self, checkpoints=True):
        """Make the directory and its subdirectories."""
        for sub in (self.PLOTS, self.TENSORBOARD) + ((self.CHECKPOINTS,) if checkpoints else ()):
            os.makedirs(self._join(sub), exist_ok=True)
        return self

    def write_model(self, checkpoint):
        """model.pt (weights + record, no training state) and config.json (the record as readable JSON)."""
        checkpoint.save(self.model_file, include_training_state=False)
        atomic_write_text(self.config_file, config_json(checkpoint.record))

    def write_history(self, rows):
        atomic_write_text(self.history_file, history_tsv(rows))

    def copy_outputs_to(self, dest):
        """history.tsv, plots/*.png|svg and the TensorBoard event files into another directory (a model artifact).

        Returns
        -------
        bool
            Whether a history file was copied.
        """
        dest = RunDirectory(dest) if not isinstance(dest, RunDirectory) else dest
        copied_history = False
        if os.path.isfile(self.history_file):
            shutil.copyfile(self.history_file, dest.history_file)
            copied_history = True
        if os.path.isdir(self.plots_dir):
            for name in sorted(os.listdir(self.plots_dir)):
                if name.endswith((".png", ".svg")) and not name.startswith("."):
                    os.makedirs(dest.plots_dir, exist_ok=True)
                    shutil.copyfile(os.path.join(self.plots_dir, name), os.path.join(dest.plots_dir, name))
        if os.path.isdir(self.tensorboard_dir):
            for folder, _, files in os.walk(self.tensorboard_dir):
                for name in sorted(files):
                    if not name.startswith("events.out.tfevents."):
                        continue
                    rel = os.path.relpath(os.path.join(folder, name), self.path)
                    target = os.path.join(dest.path, rel)
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copyfile(os.path.join(folder, name), target)
        return copied_history

    # ---- reading ----------------------------------------------------------------------------------------------
    def read_config(self):
        """config.json as a dict (torch-free)."""
        with open(self.config_file) as fh:
            return json.load(fh)

    def read_record(self):
        """The `ModelRecord` of config.json (torch-free), after checking its marker and version."""
        try:
            config = self.read_config()
        except FileNotFoundError:
            raise AAMInputError(f"{self.path!r} has no {self.CONFIG}; it is not an AAM model directory.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise AAMInputError(f"{self.config_file!r} is not valid JSON: {err}") from None
        return record_from_config(config, where=self.CONFIG)

    def read_model(self, expect=None):
        """The `aam.checkpoint.Checkpoint` in model.pt (authoritative: config.json is its readable copy)."""
        from aam.checkpoint import load_checkpoint
        return load_checkpoint(self.model_file, expect=expect)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _lock_file(path, directory, opener):
    """An open file holding an exclusive advisory lock on `path` (no locking where fcntl is missing); `opener`
    opens it (`aam.safety.open_lock`: never through a symlink)."""
    handle = opener(path)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the directory check still protects finished runs
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise AAMInputError(f"another aam run ({owner}) is writing into {directory!r} right now; wait for it to "
                            "finish or choose another {opt:output_dir}.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def config_json(record):
    """The text of config.json for a record: the record with the checkpoint format marker and version."""
    return json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **record.to_json()}, indent=1,
                      sort_keys=True, allow_nan=False)


def record_from_config(config, where="config.json"):
    """The `ModelRecord` of a parsed config.json; AAMInputError when it is not one this version reads."""
    if not isinstance(config, dict):
        raise AAMInputError(f"{where} must hold a JSON object, not {type(config).__name__}.")
    format_version(config, where, "JSON", "export the model from an AAM artifact or retrain it.")
    return ModelRecord.from_json(config, where=where)


def history_tsv(rows):
    """History rows (dicts, one per epoch) as TSV text; columns in order of first appearance (an epoch column is
    added first when the rows lack one)."""
    keys = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    if "epoch" not in keys:
        keys.insert(0, "epoch")
    lines = ["\t".join(keys)]
    for index, row in enumerate(rows):
        values = []
        for k in keys:
            v = row.get(k, index + 1 if k == "epoch" else None)
            values.append("" if v is None else str(v))
        lines.append("\t".join(values))
    return "\n".join(lines) + "\n"
