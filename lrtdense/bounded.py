"""Reading untrusted files in bounded memory and time: JSON, ``.npy`` arrays, members of ``.npz``.

The rule: every size a file declares is checked against the bytes the file really holds and
against a bound the caller states, *before* anything of that size is allocated, read or parsed.
NumPy and zipfile trust what a file declares: ``np.load`` allocates whatever shape a 200-byte
header announces, ``zipfile.ZipFile`` parses a central directory of any size into objects, and a
compressed ``.npz`` member is inflated to whatever it holds. Here:

* **JSON** (``read_json``): at most ``max_bytes`` are read (a larger file is refused unparsed);
  nesting deeper than ``max_depth`` is refused by a scan of the raw bytes before ``json`` parses
  them, so no RecursionError can happen. Parsed JSON takes up to ~25x its size in Python objects.
* **.npy** (``read_npy``): the magic, the version and the header length come first; the header
  (at most ``MAX_NPY_HEADER`` bytes, NumPy's own limit) is parsed as a literal, never unpickled;
  the declared shape and dtype must give exactly the bytes that follow the header, at most
  ``max_bytes``, and match the expected shape and dtype where the caller knows them. Only then is
  the array allocated, once, and filled ``CHUNK`` bytes at a time. Objects, structured dtypes,
  strings and dates are refused; big-endian data is byte-swapped in place to native order, and a
  Fortran-order array is returned as the transpose of its C-order buffer.
* **.npz** (``open_npz_members``): the zip's end record (and its zip64 record) is read first and
  a central directory larger than ``max_directory_bytes`` is refused before zipfile parses it;
  only the named members are looked up; each must be stored or deflated (what ``np.savez`` and
  ``np.savez_compressed`` write), unencrypted, and declare an uncompressed size of at most
  ``max_bytes`` plus a header. Reads stop at that declared size, so nothing is inflated past it.

Memory: the arrays returned, one ``CHUNK`` buffer, a zip directory of at most
``max_directory_bytes`` (parsed: about 10x that), and for JSON its bytes and their objects.

Every refusal is a ``FileRefused`` (a ``ValueError``; ``TooLarge`` when a bound is exceeded) with a
one-line message that names the file and what was expected; a file that cannot be opened at all
raises the ``OSError`` of ``open``.
"""
import io
import json
import math
import os
import re
import stat
import struct
import warnings
import zipfile
import zlib

import numpy as np

__all__ = ["FileRefused", "TooLarge", "short", "read_bytes", "parse_json", "read_json", "read_npy",
           "directory_size",
           "open_npz_members", "NpzMembers", "MAX_NPY_HEADER", "MAX_NPZ_DIRECTORY", "CHUNK"]

MAX_NPY_HEADER = 10000             # NumPy's own max_header_size (np.save writes 128 bytes)
MAX_NPZ_DIRECTORY = 1 << 20        # a zip directory entry is 46 bytes + its name: ~15000 members
CHUNK = 1 << 20                    # bytes per read: the only buffer beside the arrays
_NPY_MAGIC = b"\x93NUMPY"
_KINDS = "biufc"                   # bool, integers, floats, complex: plain numbers only
_ZIP_FLAGS_OK = 0x08 | 0x800       # data descriptor, UTF-8 names; others: encryption, patches
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what np.savez(_compressed) writes
# What zipfile and zlib raise on a corrupted directory, local header or stream.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
               ValueError, OverflowError, struct.error, NotImplementedError, RuntimeError,
               UnicodeDecodeError, IndexError, KeyError)
# A JSON string (its escapes included): blanked out before brackets are counted.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


class FileRefused(ValueError):
    """A file is malformed, or declares more than the caller's bound; the message is one line."""


class TooLarge(FileRefused):
    """A file, a zip directory, a zip member or an array is larger than the caller's bound."""


def _line(value, limit=200):
    """``str(value)`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit] + "..."


def short(value, limit=200):
    """``repr(value)`` on one line, cut to ``limit`` characters (for values read from a file,
    which may be huge: an int of 4000 digits, a string of megabytes)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, (dict, list, str)) and len(value) > limit:
        return f"a {type(value).__name__} of {len(value)} items" if not isinstance(value, str) \
            else repr(value[:limit]) + "..."
    return _line(repr(value), limit)


def _open_regular(path):
    """A binary file object for ``path`` and its size; refuses anything but a regular file (a FIFO
    would block, a device never ends). Raises the OSError of ``os.open``."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(f"{path} is not a regular file")
        return os.fdopen(fd, "rb"), info.st_size
    except BaseException:
        os.close(fd)
        raise


# ------------------------------------------------------------------------------------- JSON

def read_bytes(path, max_bytes, what="the file"):
    """The bytes of the regular file ``path``, refused unread past ``max_bytes``.

    Raises:
      FileRefused: not a regular file, or larger than ``max_bytes`` (``what`` names the kind of
        file in the message, e.g. "a case.json").
      OSError: it cannot be opened.
    """
    f, size = _open_regular(path)
    with f:
        if size > max_bytes:
            raise TooLarge(f"{path} is {size} bytes; {what} holds at most {max_bytes}")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TooLarge(f"{path} is more than {max_bytes} bytes; {what} holds at most "
                       f"{max_bytes}")
    return data


def _depth(data):
    """The deepest nesting of [ and { in JSON text ``data`` (bytes), strings left out."""
    stripped = _JSON_STRING.sub(b'""', data)
    chars = np.frombuffer(stripped, np.uint8)
    steps = (np.isin(chars, (ord("["), ord("{"))).astype(np.int32)
             - np.isin(chars, (ord("]"), ord("}"))))
    return int(np.cumsum(steps).max(initial=0))


def parse_json(data, max_depth, where, **json_options):
    """Parses JSON ``data`` (bytes) nested at most ``max_depth`` deep; ``where`` names it in errors.

    ``json_options`` go to ``json.loads`` (e.g. ``object_pairs_hook``); a ValueError they raise
    is reported like a syntax error.

    Raises:
      FileRefused: not UTF-8, nested too deep, or not valid JSON.
    """
    depth = _depth(data)
    if depth > max_depth:
        raise FileRefused(f"{where} nests [ and {{ {depth} deep; at most {max_depth} levels are "
                          f"read")
    try:
        return json.loads(data.decode("utf-8"), **json_options)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise FileRefused(f"{where} is not valid JSON ({type(err).__name__}: {_line(err)})") \
            from None


def read_json(path, max_bytes, max_depth, what="a JSON file", **json_options):
    """The parsed JSON of ``path``: at most ``max_bytes`` long, nested at most ``max_depth`` deep.

    Args:
      path: the file.
      max_bytes: the largest file read; a larger one is refused without being read.
      max_depth: the deepest nesting of arrays and objects.
      what: the kind of file, for messages ("a case.json").
      json_options: passed to ``json.loads``.
    Raises:
      FileRefused: too large, too deep, not UTF-8 or not JSON (one line naming ``path``).
      OSError: it cannot be opened.
    """
    return parse_json(read_bytes(path, max_bytes, what), max_depth, path, **json_options)


# ------------------------------------------------------------------------------------- .npy

def _read_exactly(f, n, where, what):
    data = f.read(n)
    if len(data) != n:
        raise FileRefused(f"{where}: {what} ends after {len(data)} of {n} bytes; the file is "
                          f"truncated")
    return data


def _read_header(f, available, where):
    """(shape, fortran_order, dtype, size of the header) of the .npy at ``f``'s position, which
    occupies ``available`` bytes; at most MAX_NPY_HEADER bytes of header are read."""
    if available < 10:
        raise FileRefused(f"{where}: {available} bytes, too short for an .npy header")
    prefix = _read_exactly(f, 8, where, "the .npy magic")
    if prefix[:6] != _NPY_MAGIC:
        raise FileRefused(f"{where} is not an .npy file (it does not start with \\x93NUMPY)")
    version = (prefix[6], prefix[7])
    if version not in ((1, 0), (2, 0)):
        raise FileRefused(f"{where}: .npy format version {version[0]}.{version[1]}; expected 1.0 "
                          f"or 2.0 (3.0 is for structured dtypes, which are refused)")
    size_format = "<H" if version == (1, 0) else "<I"
    length_field = _read_exactly(f, struct.calcsize(size_format), where, "the .npy header")
    length = struct.unpack(size_format, length_field)[0]
    header_size = 8 + len(length_field) + length
    if length > MAX_NPY_HEADER:
        raise FileRefused(f"{where}: the .npy header declares {length} bytes; at most "
                          f"{MAX_NPY_HEADER} are read (NumPy's own limit)")
    if header_size > available:
        raise FileRefused(f"{where}: the .npy header declares {length} bytes, more than the "
                          f"{available - 8 - len(length_field)} there; the file is truncated")
    text = _read_exactly(f, length, where, "the .npy header")
    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
              else np.lib.format.read_array_header_2_0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # NumPy warns about Python 2 headers
            shape, fortran, dtype = reader(io.BytesIO(length_field + text),
                                           max_header_size=MAX_NPY_HEADER)
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError, OverflowError,
            struct.error, EOFError) as err:
        raise FileRefused(f"{where}: invalid .npy header ({_line(err)})") from None
    return shape, fortran, dtype, header_size


def _check_dtype(dtype, where):
    if dtype.hasobject:
        raise FileRefused(f"{where} holds Python objects (pickled data); expected an array of "
                          f"plain numbers (pickles are never loaded)")
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in _KINDS:
        raise FileRefused(f"{where} has dtype {_line(dtype)}; expected plain numbers (bool, "
                          f"integer, float or complex)")


def read_npy(source, nbytes_available, max_bytes, expected_shape=None, expected_dtype=None, *,
             what=None):
    """Reads one ``.npy`` array, checking what its header declares before allocating it.

    Args:
      source: a path, or a binary file object positioned at the start of the .npy.
      nbytes_available: the bytes the .npy occupies (a zip member's uncompressed size); None
        for a path (its size on disk).
      max_bytes: the largest array (data bytes, header excluded) read.
      expected_shape, expected_dtype: when given, the header must declare them (a big-endian
        dtype matches its native twin).
      what: how messages name the source (default: the path, or "the .npy").
    Returns:
      The array, in native byte order.
    Raises:
      FileRefused: a malformed header, a dtype that is not plain numbers, a size that differs
        from the bytes there or exceeds ``max_bytes``, an unexpected shape or dtype, or data that
        ends early or runs on. One line naming the source.
      OSError: a path that cannot be opened.
    """
    if isinstance(source, (str, bytes, os.PathLike)):
        f, size = _open_regular(source)
        with f:
            return read_npy(f, size if nbytes_available is None else nbytes_available, max_bytes,
                            expected_shape, expected_dtype, what=what or os.fspath(source))
    where = what or "the .npy"
    shape, fortran, dtype, header_size = _read_header(source, nbytes_available, where)
    _check_dtype(dtype, where)
    if any(n < 0 for n in shape):
        raise FileRefused(f"{where}: the header declares the shape {_line(shape)}")
    nbytes = math.prod(shape) * dtype.itemsize
    declared = f"shape {_line(shape)} and dtype {dtype}"
    if nbytes > max_bytes:
        raise TooLarge(f"{where} declares {declared}: {nbytes} bytes of data, more than the "
                       f"{max_bytes} allowed")
    if nbytes != nbytes_available - header_size:
        raise FileRefused(f"{where} declares {declared}: {nbytes} bytes of data, but "
                          f"{nbytes_available - header_size} follow its header")
    native = dtype.newbyteorder("=") if not dtype.isnative else dtype
    if expected_shape is not None and tuple(shape) != tuple(expected_shape):
        raise FileRefused(f"{where} has shape {_line(shape)}; expected {tuple(expected_shape)}")
    if expected_dtype is not None and native != np.dtype(expected_dtype):
        raise FileRefused(f"{where} has dtype {dtype}; expected {np.dtype(expected_dtype)}")
    flat = np.empty(math.prod(shape), native)
    view = flat.view(np.uint8)
    filled = 0
    while filled < nbytes:
        got = source.readinto(view[filled:filled + CHUNK])
        if not got:
            raise FileRefused(f"{where}: the data ends after {filled} of {nbytes} bytes; the "
                              f"file is truncated")
        filled += got
    if source.read(1):
        raise FileRefused(f"{where} has data after the {nbytes} bytes its header declares")
    if not dtype.isnative:
        flat.byteswap(inplace=True)      # the bytes were big-endian numbers
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


# ------------------------------------------------------------------------------------- .npz

def directory_size(f, size):
    """(bytes, entries) of the central directory as the zip's end record declares them (the larger
    of the classic and the zip64 values), or None without an end record (APPNOTE 4.3.14-4.3.16).

    zipfile reads and parses as many bytes of directory as this declares, each entry into a
    ~400-byte object, so it is checked first; zipfile finds the end record the same way."""
    tail_size = min(size, 22 + 65535)
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    at = len(tail) - 22 if tail[-22:-18] == b"PK\x05\x06" else tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return None
    entries, declared = struct.unpack("<HI", tail[at + 10:at + 16])
    end = size - tail_size + at                  # the end record's offset in the file
    if end >= 76:                                # a zip64 record (56) and its locator (20)
        f.seek(end - 76)
        record = f.read(76)
        if record[:4] == b"PK\x06\x06" and record[56:60] == b"PK\x06\x07":
            entries = max(entries, struct.unpack("<Q", record[32:40])[0])
            declared = max(declared, struct.unpack("<Q", record[40:48])[0])
    return declared, entries


class NpzMembers:
    """The named members of an open ``.npz`` (from ``open_npz_members``); a context manager.

    Attributes:
      path: the archive.
      names: the requested names that the archive holds, in the order requested.
    """

    def __init__(self, path, f, zf, infos, max_bytes):
        self.path, self._f, self._zf, self._infos, self._max = path, f, zf, infos, max_bytes
        self.names = list(infos)

    def read(self, name, max_bytes=None, expected_shape=None, expected_dtype=None):
        """The array of member ``name`` (see ``read_npy``), at most ``max_bytes`` (default: the
        bound given to ``open_npz_members``).

        Raises:
          FileRefused: as ``read_npy``, or a corrupted member (bad CRC, bad deflate stream).
          KeyError: ``name`` is not in ``names``.
        """
        info = self._infos[name]
        where = f"{self.path}: member {_line(info.filename)}"
        bound = self._max if max_bytes is None else min(max_bytes, self._max)
        try:
            with self._zf.open(info) as member:
                return read_npy(member, info.file_size, bound, expected_shape, expected_dtype,
                                what=where)
        except FileRefused:
            raise
        except _ZIP_ERRORS as err:
            raise FileRefused(f"{where} is corrupted ({type(err).__name__}: {_line(err)})") \
                from None

    def close(self):
        """Closes the archive."""
        self._zf.close()
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_npz_members(path, names, max_bytes, *, max_directory_bytes=MAX_NPZ_DIRECTORY):
    """Opens the ``.npz`` at ``path`` for reading the arrays ``names`` only (each the member
    ``name + ".npy"``, as ``np.savez`` writes it), after checking its directory.

    Args:
      path: the archive.
      names: the array names wanted; those absent are left out of the result's ``names``.
      max_bytes: the largest array read (a member declaring more is refused before anything
        is inflated).
      max_directory_bytes: the largest central directory parsed.
    Returns:
      An ``NpzMembers`` (use it in a ``with`` block).
    Raises:
      FileRefused: not a zip, a directory larger than ``max_directory_bytes``, a wanted member
        twice, encrypted, compressed other than by deflate, or declaring more than
        ``max_bytes`` (plus its header) uncompressed or more bytes than the file holds.
      OSError: it cannot be opened.
    """
    f, size = _open_regular(path)
    try:
        return _open_npz(f, size, path, names, max_bytes, max_directory_bytes)
    except BaseException:
        f.close()
        raise


def _open_npz(f, size, path, names, max_bytes, max_directory_bytes):
    if f.read(6) == _NPY_MAGIC:
        raise FileRefused(f"{path} is a plain .npy file; expected an .npz (zip) archive")
    directory = directory_size(f, size)
    if directory is None:
        raise FileRefused(f"{path} is not a valid .npz: it is not a zip archive (no "
                          f"end-of-central-directory record)")
    declared, entries = directory
    if declared > max_directory_bytes:
        raise TooLarge(f"{path} declares a zip directory of {declared} bytes ({entries} "
                       f"entries); at most {max_directory_bytes} bytes are read")
    f.seek(0)
    try:
        zf = zipfile.ZipFile(f)
    except _ZIP_ERRORS as err:
        raise FileRefused(f"{path} is not a valid .npz (zip) archive ({type(err).__name__}: "
                          f"{_line(err)})") from None
    try:
        wanted = {name + ".npy": name for name in names}
        infos = {}
        for info in zf.infolist():
            name = wanted.get(info.filename)
            if name is None:
                continue
            where = f"{path}: member {_line(info.filename)}"
            if name in infos:
                raise FileRefused(f"{where} appears twice in the zip directory")
            if info.flag_bits & ~_ZIP_FLAGS_OK:
                raise FileRefused(f"{where} has zip flags {info.flag_bits:#x} (encrypted or "
                                  f"patched); expected a plain member")
            if info.compress_type not in _ZIP_METHODS:
                raise FileRefused(f"{where} is compressed by method {info.compress_type}; "
                                  f"expected stored or deflated (np.savez, np.savez_compressed)")
            if info.file_size > max_bytes + MAX_NPY_HEADER:
                raise TooLarge(f"{where} declares {info.file_size} bytes uncompressed; an "
                               f"array of at most {max_bytes} bytes with its header is read")
            stored = info.compress_type == zipfile.ZIP_STORED
            if stored and info.compress_size != info.file_size or \
                    info.header_offset + info.compress_size > size:
                raise FileRefused(f"{where} declares {info.compress_size} bytes at offset "
                                  f"{info.header_offset} in a file of {size}; the zip directory "
                                  f"is corrupted or the file truncated")
            infos[name] = info
    except BaseException:
        zf.close()
        raise
    return NpzMembers(path, f, zf, {n: infos[n] for n in names if n in infos}, max_bytes)
