"""One checkpoint directory: its ``meta.json`` (the position and the size and
SHA-256 of every file), read and verified by :func:`read_checkpoint` into a
:class:`Checkpoint`, and the errors that name what is wrong.
"""
import hashlib
import json
import os

__all__ = ["CheckpointError", "Checkpoint", "read_checkpoint", "file_sha256",
           "disk_free"]

META = "meta.json"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or truncated, or could not be written."""


def disk_free(path):
    """``'<n> bytes free on the file system of <folder>'`` for error messages."""
    folder = os.path.abspath(path)
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        st = os.statvfs(folder)
        return f"{st.f_bavail * st.f_frsize} bytes free on the file system of {folder}"
    except (OSError, AttributeError):
        return f"free space of {folder} unknown"


def file_sha256(path, chunk=1 << 20):
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Checkpoint:
    """A verified checkpoint directory.

    Attributes
    ----------
    path : str
        The checkpoint directory.
    iteration : int
    meta : dict
        Everything stored in ``meta.json`` (``meta['state']`` is what the
        caller passed to :meth:`CheckpointManager.save`).
    """

    def __init__(self, path, meta):
        self.path, self.meta = path, meta
        self.iteration = int(meta["iteration"])

    @property
    def state(self):
        """The caller's state dict saved with the checkpoint."""
        return self.meta.get("state", {})

    def file(self, name):
        """Full path of the stored file ``name``.

        Raises
        ------
        CheckpointError
            When the checkpoint has no such file.
        """
        if name not in self.meta.get("files", {}):
            raise CheckpointError(f"{self.path}: the checkpoint has no file {name!r} "
                                  f"(it has {sorted(self.meta.get('files', {}))})")
        return os.path.join(self.path, name)

    def __repr__(self):
        return f"Checkpoint({self.path!r}, iteration={self.iteration})"


def read_checkpoint(path, verify=True):
    """Read and verify the checkpoint directory ``path``.

    Parameters
    ----------
    path : str
    verify : bool
        Check the size and SHA-256 of every file (reads them all once).

    Returns
    -------
    Checkpoint

    Raises
    ------
    CheckpointError
        Naming the file that is missing, unreadable, truncated or corrupt.
    """
    meta_path = os.path.join(path, META)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such checkpoint directory")
    try:
        with open(meta_path, "r", encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: missing; {path} is not a complete "
                              "checkpoint") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{meta_path}: corrupt or truncated ({err})") from None
    if not isinstance(meta, dict) or "iteration" not in meta or "files" not in meta:
        raise CheckpointError(f"{meta_path}: not a checkpoint description (needs "
                              "'iteration' and 'files')")
    for name, info in meta["files"].items():
        fpath = os.path.join(path, name)
        if not os.path.isfile(fpath):
            raise CheckpointError(f"{fpath}: missing from the checkpoint")
        if not verify:
            continue
        size = os.path.getsize(fpath)
        if size != info["size"]:
            raise CheckpointError(
                f"{fpath}: {size} bytes, but the checkpoint recorded {info['size']} "
                f"({'truncated' if size < info['size'] else 'altered'} file)")
        digest = file_sha256(fpath)
        if digest != info["sha256"]:
            raise CheckpointError(f"{fpath}: checksum mismatch (sha256 {digest[:12]}..., "
                                  f"recorded {info['sha256'][:12]}...): the file is corrupt")
    return Checkpoint(path, meta)

