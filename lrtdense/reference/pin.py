"""The sha256 of the shipped reference set's manifest.json (written by
``lrtdense reference generate lrtdense/reference_data --pin``; checked by every ``verify``).

The manifest holds the sha256 of every case file, so this one digest pins every byte of the
shipped set: an edited case whose manifest entry was re-signed still differs here.
"""
SHIPPED_MANIFEST_SHA256 = "f1d136aca1ab732c3c57391298dd738a64d27530878a9655113c33e999303ea5"
