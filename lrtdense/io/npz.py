"""A model folder's ``.npz`` files: written uncompressed without pickling, read in bounded memory.

Reading is stricter than ``lrtdense.bounded_npz.open_npz_members``: the expected arrays are known
from the config, so the zip directory must name exactly those members, stored uncompressed, each
of exactly the size its shape and dtype need, and each ``.npy`` header must declare that shape
and dtype in C order and native byte order (what ``save`` writes); nothing is allocated before.
"""
import collections
import io
import math
import os
import struct
import zipfile

import numpy as np

from lrtdense.bounded import MAX_NPY_HEADER
from lrtdense.bounded_npz import ZIP_ERRORS, open_zip
from lrtdense.io.folders import CHUNK
from lrtdense.io.jsonvalues import short

__all__ = ["write_npz", "read_npz"]

_MAX_ENTRY_EXTRA = 1024         # extra field and comment allowed per zip directory entry
_ZIP_FLAGS_OK = 0x08 | 0x800    # data descriptor, UTF-8 names; others mean encryption or patches


def write_npz(f, arrays):
    """An uncompressed .npz, as ``np.savez`` writes it, but never pickling."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            with zf.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, value, allow_pickle=False)


def read_npz(f, path, spec):
    """The arrays of ``spec`` ({key: (shape, dtype)}) from the .npz open as ``f`` (named ``path``
    in messages), each checked against the zip directory and its .npy header before it is
    allocated."""
    f.seek(0)
    if f.read(6) == b"\x93NUMPY":
        raise ValueError(f"{path} is a plain .npy file; expected an .npz archive written by "
                         f"lrtdense.io.save")
    f.seek(0)
    size = os.fstat(f.fileno()).st_size
    need = sum(math.prod(shape) * dtype.itemsize for shape, dtype in spec.values())
    if need > size:
        raise ValueError(f"{path} holds {size} bytes but its config declares "
                         f"{short(need)} bytes of arrays; the file is truncated or the "
                         f"config's sizes are wrong")
    allowed = sum(46 + len(key.encode()) + 4 + _MAX_ENTRY_EXTRA for key in spec)
    zf = open_zip(f, size, path, allowed, "is corrupted or not an .npz: it could not be read as "
                  "a plain .npz", limit=f"{len(spec)} members need at most {allowed}")
    with zf:
        infos = _checked_directory(zf, spec, size, path)
        out = {}
        for key, (shape, dtype) in spec.items():
            try:
                with zf.open(infos[key]) as member:
                    out[key] = _read_member(member, infos[key], shape, dtype)
            except ValueError as err:
                raise ValueError(f"{path}: member {short(key + '.npy')}: {err}") from None
            except ZIP_ERRORS as err:
                raise ValueError(f"{path} could not be read: member {short(key + '.npy')} is "
                                 f"corrupted ({type(err).__name__}: {short(err)})") from None
    return out


def _checked_directory(zf, spec, size, path):
    """{key: ZipInfo} after checking names, compression, flags and sizes (nothing read yet)."""
    infos = zf.infolist()
    names = [info.filename for info in infos]
    wanted = {key + ".npy": key for key in spec}
    duplicates = sorted(n for n, count in collections.Counter(names).items() if count > 1)
    missing = sorted(set(wanted) - set(names))
    extra = sorted(set(names) - set(wanted))
    if duplicates or missing or extra:
        raise ValueError(f"{path} does not hold the expected arrays: missing {short(missing)}, "
                         f"unexpected {short(extra)}, duplicated {short(duplicates)}")
    total = 0
    by_key = {}
    for info in infos:
        key = wanted[info.filename]
        shape, dtype = spec[key]
        nbytes = math.prod(shape) * dtype.itemsize
        where = f"{path}: member {short(info.filename)}"
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{where} is compressed (method {info.compress_type}); lrtdense "
                             f"reads only the uncompressed members np.savez and save write")
        if info.flag_bits & ~_ZIP_FLAGS_OK:
            raise ValueError(f"{where} has zip flags {info.flag_bits:#x} (encrypted or "
                             f"patched data); expected a plain stored member")
        if not nbytes + 10 <= info.file_size <= nbytes + MAX_NPY_HEADER:
            raise ValueError(f"{where} declares {info.file_size} bytes; an array of shape "
                             f"{short(shape)} and dtype {dtype} with its header needs "
                             f"{nbytes + 10} to {nbytes + MAX_NPY_HEADER}")
        if info.compress_size != info.file_size:
            raise ValueError(f"{where} declares {info.compress_size} stored bytes for "
                             f"{info.file_size} bytes of data; the zip directory is corrupted")
        if info.header_offset + info.compress_size > size:
            raise ValueError(f"{where} extends past the end of the file; the file is truncated")
        total += info.compress_size
        by_key[key] = info
    if total > size:
        raise ValueError(f"{path}: its members declare {total} bytes in a file of {size}; the "
                         f"zip directory is corrupted")
    return by_key


def _read_member(member, info, shape, dtype):
    """One .npy member: its header (bounded) checked against (shape, dtype), then its data."""
    nbytes = math.prod(shape) * dtype.itemsize
    header_size = info.file_size - nbytes
    head = io.BytesIO(_read_exactly(member, header_size, "the .npy header"))
    try:
        version = np.lib.format.read_magic(head)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(head, max_header_size=MAX_NPY_HEADER)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(head, max_header_size=MAX_NPY_HEADER)
        else:
            raise ValueError(f".npy format version {version}; expected 1.0 or 2.0")
    except (ValueError, SyntaxError, TypeError, struct.error, EOFError) as err:
        raise ValueError(f"invalid .npy header ({short(err)})") from None
    got_shape, fortran_order, got_dtype = header
    if got_dtype.hasobject:
        raise ValueError("holds Python objects (a pickled array); expected "
                         f"{dtype} numbers (lrtdense never unpickles)")
    if got_shape != shape or got_dtype != dtype:
        raise ValueError(f"has shape {short(got_shape)} and dtype {str(got_dtype)[:200]}; expected "
                         f"{short(shape)} {dtype}")
    if fortran_order:
        raise ValueError("is stored in Fortran order; lrtdense writes C order")
    if head.tell() != header_size:
        raise ValueError(f"the .npy header is {head.tell()} bytes but the zip directory implies "
                         f"{header_size} for an array of shape {short(shape)} and dtype {dtype}")
    out = np.empty(shape, dtype)
    view = out.reshape(-1).view(np.uint8)
    for start in range(0, nbytes, CHUNK):
        chunk = view[start:start + CHUNK]
        if member.readinto(chunk) != len(chunk):
            raise ValueError(f"the data ends before {nbytes} bytes; the file is truncated")
    if member.read(1):
        raise ValueError("has data after the array")
    return out


def _read_exactly(member, n, what):
    data = member.read(n)
    if len(data) != n:
        raise ValueError(f"{what} ends after {len(data)} of {n} bytes; the file is truncated")
    return data
