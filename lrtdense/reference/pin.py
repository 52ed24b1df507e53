"""The sha256 of the shipped reference set's manifest.json (written by
``lrtdense reference generate lrtdense/reference_data --pin``; checked by every ``verify``).

The manifest holds the sha256 of every case file, so this one digest pins every byte of the
shipped set: an edited case whose manifest entry was re-signed still differs here.
"""
SHIPPED_MANIFEST_SHA256 = "e47a0ba3830b7390de641a8aaef75d2aa99b4dd2ffc679f141e16adf11fdaa67"
