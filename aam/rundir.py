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
    _RUN_FILES = (MODEL, CONFIG, HISTORY, PLOTS, TENSORBOARD, CHECKPOINTS)

    def existing_run_files(self):
        """Names of the run files already in the directory (a previous run's)."""
        if not os.path.isdir(self.path):
            return []
        return [name for name in self._RUN_FILES if os.path.exists(self._join(name))]

    def claim(self, resume=False, overwrite=False):
        """Own this directory for a run, until `release`.

        Another run into the same directory at the same time is refused (an advisory lock, respected by every
        aam run), and so is a directory that already holds a run, unless the new run continues it (`resume`) or
        replaces it (`overwrite`, which deletes the old run's files first, so nothing of the two runs mixes).
        Temporary files left by a process killed while writing are removed.

        Raises
        ------
        AAMInputError
            The path is a file, another run holds the directory, or it holds a finished run.
        """
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise AAMInputError(f"{{opt:output_dir}} {self.path!r} is a file, not a directory; choose a directory "
                                "for the run's outputs.")
        os.makedirs(self.path, exist_ok=True)
        self._lock = _lock_file(self._join(self.LOCK), self.path)
        try:
            existing = self.existing_run_files()
            if existing and not resume and not overwrite:
                raise AAMInputError(
                    f"{{opt:output_dir}} {self.path!r} already holds a run ({', '.join(existing)}). Continue it with "
                    f"{{opt:resume}} {self.last_checkpoint}, replace it with {{opt:overwrite}}, or choose a new "
                    "directory.")
            if overwrite and not resume:
                for name in existing:
                    target = self._join(name)
                    shutil.rmtree(target) if os.path.isdir(target) else os.unlink(target)
            self._remove_stale_temporaries()
        except BaseException:
            self.release()
            raise
        return self

    def release(self):
        """Give up the directory (see `claim`)."""
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


def _lock_file(path, directory):
    """An open file holding an exclusive advisory lock on `path` (no locking where fcntl is missing)."""
    handle = open(path, "a+")
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
