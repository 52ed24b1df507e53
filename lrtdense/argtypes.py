"""Argument types for the command line: each parses one value or says, in one line, what it
expected. Used as ``type=`` by the subcommands' ``add_arguments``; the output-path checks are also
called by the functions behind them, so that a bad path fails before any work is done.

An output file is never written over if git tracks it (README: "Where commands write"): the
command line refuses it; the functions behind the commands take ``replace=True`` to regenerate a
committed file on purpose.
"""
import argparse
import math
import os
import subprocess
import tempfile

__all__ = ["integer", "number", "output_file", "output_folder", "check_output_file",
           "check_output_folder"]


def integer(low, high=None):
    """A type accepting integers in [low, high] (high None: no upper bound)."""
    expected = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def number(low, high=None, *, low_open=True):
    """A type accepting finite floats in (low, high] ([low, high] with ``low_open=False``)."""
    left = "(" if low_open else "["
    expected = (f"a finite number {'>' if low_open else '>='} {low}" if high is None
                else f"a number in {left}{low}, {high}]")

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if (not math.isfinite(value) or value < low or (low_open and value == low)
                or (high is not None and value > high)):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def check_output_file(path, extensions=None, *, replace=False):
    """Raises ValueError unless ``path`` can be written: its folder exists and takes a new file,
    it is not a folder, and (with ``extensions``, e.g. {".png"}) it ends in one of them; unless
    ``replace``, it is not a file git tracks."""
    folder = os.path.dirname(path) or "."
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a folder; expected a file name")
    if extensions is not None and os.path.splitext(path)[1].lower() not in extensions:
        raise ValueError(f"{path!r} should end in one of {', '.join(sorted(extensions))}")
    if not os.path.isdir(folder):
        raise ValueError(f"the folder {folder!r} of {path!r} does not exist")
    _check_writable(folder)
    _check_target(path, replace)


def check_output_folder(path, names=(), *, replace=False):
    """Raises ValueError unless folder ``path`` exists and takes new files, or can be created
    (its nearest existing parent is a folder that takes new files), and each of ``names`` (the
    files to be written in it) is new or a file that can be written over and, unless
    ``replace``, that git does not track."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{path!r} exists and is not a folder")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"{path!r} cannot be created: {existing!r} is not a folder")
    _check_writable(existing)
    for name in names:
        target = os.path.join(path, name)
        if os.path.isdir(target):
            raise ValueError(f"{target!r} is a folder; the file {name!r} is written there")
        _check_target(target, replace)


def _check_target(path, replace):
    """An existing file at ``path`` must be writable and, unless ``replace``, not tracked by git."""
    if not os.path.exists(path):
        return
    if not os.access(path, os.W_OK):
        raise ValueError(f"{path!r} exists and cannot be overwritten")
    if not replace and _tracked_by_git(path):
        raise ValueError(f"{path!r} is committed to git and is not written over; name another "
                         f"file (or move it away first to replace it on purpose)")


def _tracked_by_git(path):
    """Whether git tracks ``path`` or the file it links to; False where git or a repository is
    missing (then nothing is known to be committed)."""
    for candidate in {os.path.abspath(path), os.path.realpath(path)}:
        folder, name = os.path.split(candidate)
        try:
            proc = subprocess.run(["git", "-C", folder, "ls-files", "--error-unmatch", "--", name],
                                  capture_output=True, timeout=30,
                                  env={**os.environ, "GIT_LITERAL_PATHSPECS": "1"})
        except (OSError, subprocess.TimeoutExpired):
            return False
        if proc.returncode == 0:
            return True
    return False


def _check_writable(folder):
    """Creates (and at once removes) an unnamed file in ``folder``: the only sure test."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"cannot write in the folder {folder!r} ({err.strerror})") from None


def output_file(extensions=None):
    """A type for a file to write ('' passes through: no file)."""
    def parse(text):
        if text:
            try:
                check_output_file(text, extensions)
            except ValueError as err:
                raise argparse.ArgumentTypeError(str(err)) from None
        return text
    return parse


def output_folder(text, names=()):
    """A type for a folder to write into (created if needed); with ``names`` (bound with
    ``functools.partial``), the files the command writes in it are checked too."""
    try:
        check_output_folder(text, names)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text
