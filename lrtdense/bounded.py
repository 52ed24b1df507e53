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
* **.npz**: see ``lrtdense.bounded_npz``, which reads its members with ``read_npy``.

Memory: the arrays returned, one ``CHUNK`` buffer, and for JSON its bytes and their objects.

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

import numpy as np

__all__ = ["FileRefused", "TooLarge", "short", "one_line", "open_regular", "read_bytes",
           "parse_json", "read_json", "read_npy", "MAX_NPY_HEADER", "CHUNK"]

MAX_NPY_HEADER = 10000             # NumPy's own max_header_size (np.save writes 128 bytes)
CHUNK = 1 << 20                    # bytes per read: the only buffer beside the arrays
_NPY_MAGIC = b"\x93NUMPY"
_KINDS = "biufc"                   # bool, integers, floats, complex: plain numbers only
# A JSON string (its escapes included): blanked out before brackets are counted.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


class FileRefused(ValueError):
    """A file is malformed, or declares more than the caller's bound; the message is one line."""


class TooLarge(FileRefused):
    """A file, a zip directory, a zip member or an array is larger than the caller's bound."""


def one_line(value, limit=200):
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
    return one_line(repr(value), limit)


def open_regular(path):
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
    f, size = open_regular(path)
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
        raise FileRefused(f"{where} is not valid JSON ({type(err).__name__}: {one_line(err)})") \
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
        raise FileRefused(f"{where}: invalid .npy header ({one_line(err)})") from None
    return shape, fortran, dtype, header_size


def _check_dtype(dtype, where):
    if dtype.hasobject:
        raise FileRefused(f"{where} holds Python objects (pickled data); expected an array of "
                          f"plain numbers (pickles are never loaded)")
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in _KINDS:
        raise FileRefused(f"{where} has dtype {one_line(dtype)}; expected plain numbers (bool, "
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
        f, size = open_regular(source)
        with f:
            return read_npy(f, size if nbytes_available is None else nbytes_available, max_bytes,
                            expected_shape, expected_dtype, what=what or os.fspath(source))
    where = what or "the .npy"
    shape, fortran, dtype, header_size = _read_header(source, nbytes_available, where)
    _check_dtype(dtype, where)
    if any(n < 0 for n in shape):
        raise FileRefused(f"{where}: the header declares the shape {one_line(shape)}")
    nbytes = math.prod(shape) * dtype.itemsize
    declared = f"shape {one_line(shape)} and dtype {dtype}"
    if nbytes > max_bytes:
        raise TooLarge(f"{where} declares {declared}: {nbytes} bytes of data, more than the "
                       f"{max_bytes} allowed")
    if nbytes != nbytes_available - header_size:
        raise FileRefused(f"{where} declares {declared}: {nbytes} bytes of data, but "
                          f"{nbytes_available - header_size} follow its header")
    native = dtype.newbyteorder("=") if not dtype.isnative else dtype
    if expected_shape is not None and tuple(shape) != tuple(expected_shape):
        raise FileRefused(f"{where} has shape {one_line(shape)}; expected {tuple(expected_shape)}")
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
