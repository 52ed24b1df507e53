"""Where a fixture recorder writes: never over files already there unless asked (``--replace``).

The recorders' default folders hold the committed fixtures the tests replay, so a plain run
(or one with a mistyped folder) must not overwrite them: re-recording on purpose is
``--replace``; ``--check`` (where a recorder has it) compares without writing.
"""
import os
import sys


def writable_output(outdir, argv):
    """``outdir`` if it is new or empty, or if ``--replace`` is in ``argv``; else exits with
    status 2 and a one-line message naming the folder."""
    if os.path.isdir(outdir) and os.listdir(outdir) and "--replace" not in argv:
        sys.stderr.write(f"{os.path.basename(sys.argv[0])}: {outdir} already holds files (the "
                         f"committed fixtures?); pass --replace to record over them, or name a "
                         f"new or empty folder\n")
        sys.exit(2)
    return outdir
