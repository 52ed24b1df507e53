"""Reading the members of untrusted ``.npz`` files in bounded memory and time (the rule of
``lrtdense.bounded``: every declared size is checked before anything of that size is read).

``open_npz_members``: the zip's end record (and its zip64 record) is read first and a central
directory larger than ``max_directory_bytes`` is refused before zipfile parses it; only the named
members are looked up; each must be stored or deflated (what ``np.savez`` and
``np.savez_compressed`` write), unencrypted, and declare an uncompressed size of at most
``max_bytes`` plus a header. Reads stop at that declared size, so nothing is inflated past it;
each member is read by ``lrtdense.bounded.read_npy``.

Memory: the arrays returned, one ``CHUNK`` buffer and a zip directory of at most
``max_directory_bytes`` (parsed: about 10x that). Refusals are ``FileRefused`` / ``TooLarge``.
"""
import struct
import zipfile
import zlib

from lrtdense.bounded import (MAX_NPY_HEADER, FileRefused, TooLarge, one_line, open_regular,
                              read_npy)

__all__ = ["directory_size", "open_zip", "open_npz_members", "NpzMembers", "ZIP_ERRORS",
           "MAX_NPZ_DIRECTORY"]

MAX_NPZ_DIRECTORY = 1 << 20        # a zip directory entry is 46 bytes + its name: ~15000 members
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_FLAGS_OK = 0x08 | 0x800       # data descriptor, UTF-8 names; others: encryption, patches
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what np.savez(_compressed) writes
# What zipfile and zlib raise on a corrupted directory, local header or stream.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
              ValueError, OverflowError, struct.error, NotImplementedError, RuntimeError,
              UnicodeDecodeError, IndexError, KeyError)


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


def open_zip(f, size, path, max_directory_bytes, unreadable, limit=None):
    """``zipfile.ZipFile(f)`` for the zip file ``f`` of ``size`` bytes, once the central directory
    its end record declares is known to be at most ``max_directory_bytes``.

    Args:
      path: names the file in messages.
      unreadable: what the message says after ``path`` when ``f`` is no zip (no end record, or
        zipfile refuses it), e.g. "is not a valid .npz (zip) archive".
      limit: what the message says of the bound (default: "at most N bytes are read").
    Raises:
      TooLarge: the declared directory exceeds ``max_directory_bytes``.
      FileRefused: not a zip archive, or one zipfile cannot read.
    """
    directory = directory_size(f, size)
    if directory is not None and directory[0] > max_directory_bytes:
        declared, entries = directory
        limit = limit or (f"at most {max_directory_bytes} bytes are read ({entries} entries "
                          f"declared)")
        raise TooLarge(f"{path} declares a zip directory of {declared} bytes; {limit}")
    f.seek(0)
    try:
        if directory is None:
            raise zipfile.BadZipFile("no end-of-central-directory record")
        return zipfile.ZipFile(f)
    except ZIP_ERRORS as err:
        raise FileRefused(f"{path} {unreadable} ({type(err).__name__}: {one_line(err)})") from None


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
        where = f"{self.path}: member {one_line(info.filename)}"
        bound = self._max if max_bytes is None else min(max_bytes, self._max)
        try:
            with self._zf.open(info) as member:
                return read_npy(member, info.file_size, bound, expected_shape, expected_dtype,
                                what=where)
        except FileRefused:
            raise
        except ZIP_ERRORS as err:
            raise FileRefused(f"{where} is corrupted ({type(err).__name__}: {one_line(err)})") \
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
    f, size = open_regular(path)
    try:
        return _open_npz(f, size, path, names, max_bytes, max_directory_bytes)
    except BaseException:
        f.close()
        raise


def _open_npz(f, size, path, names, max_bytes, max_directory_bytes):
    if f.read(6) == _NPY_MAGIC:
        raise FileRefused(f"{path} is a plain .npy file; expected an .npz (zip) archive")
    zf = open_zip(f, size, path, max_directory_bytes, "is not a valid .npz (zip) archive")
    try:
        wanted = {name + ".npy": name for name in names}
        infos = {}
        for info in zf.infolist():
            name = wanted.get(info.filename)
            if name is None:
                continue
            where = f"{path}: member {one_line(info.filename)}"
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
