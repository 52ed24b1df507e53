"""The atomic folder operations behind ``save`` and ``load``: temporary sibling folders, their
locks, the removal of what killed saves left, the swap that commits a save, and the recovery of a
folder a crash set aside.

A save writes into ``.NAME.saving-XXXX`` beside ``NAME``, locked (``flock``) while it is written,
then swaps it into place: one ``renameat2(RENAME_EXCHANGE)`` on Linux, elsewhere two renames with
the previous folder set aside as ``.NAME.saving-XXXX-previous`` in between. A temporary folder
that no process holds locked and that is older than ``STALE_SECONDS`` is a killed save's, and the
next save removes it. A reader opens the folder once (``Folder``) and its files relative to it, so
they all come from one save; ``Replaced`` says a save swapped the folder meanwhile.
"""
import ctypes
import errno
import hashlib
import os
import secrets
import shutil
import stat
import sys
import time

try:
    import fcntl
except ImportError:                         # Windows: no advisory locks; stale folders by age
    fcntl = None

__all__ = ["STALE_SECONDS", "CHUNK", "Replaced", "Folder", "identity", "make_temporary", "lock",
           "unlock", "remove_stale", "set_aside", "recover", "readable_folder", "write_file",
           "digest", "fsync_dir", "put_in_place", "exchange"]

STALE_SECONDS = 2.0             # an unlocked temporary folder older than this is a killed save's
CHUNK = 1 << 20                 # bytes read per call: the only buffer beside the arrays
_SAVING = ".saving-"


class Replaced(Exception):
    """The folder being read was replaced by a save meanwhile: start again."""


class Folder:
    """The folder opened once: its files are opened relative to it, so they all come from the
    folder as it was when it was opened (where the platform supports ``dir_fd``)."""

    def __init__(self, path):
        self.path = path
        self.fd = None
        if os.open in os.supports_dir_fd and os.path.isdir(path):
            try:
                self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            except OSError:
                self.fd = None

    def open(self, name, required):
        """The file ``name`` opened for reading, or None if absent and not ``required``."""
        where = os.path.join(self.path, name)
        try:
            if self.fd is None:
                fd = os.open(where, os.O_RDONLY)
            else:
                fd = os.open(name, os.O_RDONLY, dir_fd=self.fd)
        except (FileNotFoundError, NotADirectoryError):
            if self.replaced():
                raise Replaced() from None     # the folder is being removed after a swap
            if required:
                raise ValueError(f"{where} does not exist or is not a regular file; expected a "
                                 f"folder written by lrtdense.io.save") from None
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            if not required:
                raise ValueError(f"{where} is not a regular file")
            raise ValueError(f"{where} does not exist or is not a regular file; expected a "
                             f"folder written by lrtdense.io.save")
        return os.fdopen(fd, "rb")

    def replaced(self):
        """True if ``path`` no longer names the folder that was opened."""
        if self.fd is None:
            return False
        then = os.fstat(self.fd)
        try:
            now = os.stat(self.path)
        except OSError:
            return True
        return (now.st_dev, now.st_ino) != (then.st_dev, then.st_ino)

    def close(self):
        """Closes the folder's descriptor."""
        if self.fd is not None:
            os.close(self.fd)


def identity(path):
    """(device, inode) of ``path`` itself (a link not followed), or None if absent."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def make_temporary(parent, name):
    """A new temporary folder beside ``name`` and the lock that marks it as being written."""
    while True:
        tmp = os.path.join(parent, f".{name}{_SAVING}{secrets.token_hex(4)}")
        try:
            os.mkdir(tmp)
            break
        except FileExistsError:
            continue
    try:
        return tmp, lock(tmp, blocking=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def lock(folder, blocking):
    """An exclusive advisory lock on ``folder`` (an open descriptor, or True where the platform
    has no locks); None if ``blocking`` is False and another process holds it."""
    if fcntl is None:
        return True
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlock(held):
    """Releases what ``lock`` returned (None and True hold nothing)."""
    if held is not True and held is not None:
        os.close(held)                          # closing the descriptor releases the lock


def temporaries(parent, name):
    """The temporary folders that saves of ``name`` made in ``parent`` (folders, not links)."""
    prefix = f".{name}{_SAVING}"
    try:
        entries = os.listdir(parent)
    except OSError:
        return []
    return [os.path.join(parent, e) for e in sorted(entries)
            if e.startswith(prefix) and _is_folder(os.path.join(parent, e))]


def _is_folder(path):
    """A folder, not a link to one (False for what another save removed meanwhile)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def remove_stale(parent, name, files):
    """Removes what killed saves of ``name`` left: temporary folders that no process holds
    locked, older than STALE_SECONDS (a live save locks its folder right after making it), and
    holding only regular files named in ``files`` (a model's; never anything else)."""
    for folder in temporaries(parent, name):
        try:
            age = time.time() - os.lstat(folder).st_mtime
            if age < STALE_SECONDS or (fcntl is None and age < 3600):
                continue
            held = lock(folder, blocking=False)
        except OSError:
            continue                            # removed meanwhile, or not ours to open
        if held is None:
            continue                            # a save in progress
        try:
            entries = os.listdir(folder)
            if all(e in files and stat.S_ISREG(os.lstat(os.path.join(folder, e)).st_mode)
                   for e in entries):
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass
        finally:
            unlock(held)


def set_aside(target):
    """The previous models, newest first, that a crash between the two renames of the non-Linux
    path left set aside as ``.NAME.saving-XXXX-previous`` while no folder is at ``target``."""
    if os.path.lexists(target):
        return []
    parent, name = os.path.split(target)
    return [folder for folder in reversed(temporaries(parent, name))
            if folder.endswith("-previous") and os.path.isfile(os.path.join(folder, "config.json"))]


def recover(target):
    """Puts the previous model back at ``target`` where a crash left it set aside."""
    for folder in set_aside(target):
        try:
            os.rename(folder, target)
        except OSError:
            continue                            # another process got there first
        return


def readable_folder(path):
    """``path``, or the previous model a crash between two renames left set aside."""
    folders = set_aside(os.path.realpath(path))
    return folders[0] if folders else path


def write_file(filename, write):
    """Writes and fsyncs a new file; returns its {"size", "sha256"} as read back from disk."""
    with open(filename, "x+b") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
        f.seek(0)
        return digest(f)


def digest(f):
    """{"size", "sha256"} of the open file ``f`` read from its position to its end."""
    h, size = hashlib.sha256(), 0
    for chunk in iter(lambda: f.read(CHUNK), b""):
        h.update(chunk)
        size += len(chunk)
    return {"size": size, "sha256": h.hexdigest()}


def fsync_dir(path):
    """Makes the entries of the folder ``path`` durable (its new files and renames)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def put_in_place(tmp, target):
    """Moves folder ``tmp`` to ``target``; returns where the previous target now is (or None)."""
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return None
    if exchange(tmp, target):
        return tmp
    aside = tmp + "-previous"
    os.rename(target, aside)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(aside, target)
        raise
    return aside


def exchange(a, b):
    """Atomically swaps two paths (Linux renameat2); False where the call does not exist."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)
