"""The sha256 of the shipped reference set's manifest.json (written by
``lrtdense reference generate lrtdense/reference_data --pin``; checked by every ``verify``).

The manifest holds the sha256 of every case file, so this one digest pins every byte of the
shipped set: an edited case whose manifest entry was re-signed still differs here.
"""
SHIPPED_MANIFEST_SHA256 = "4c89d9255bb4bca0e95841570ea21ba8d7c62f7a57c06ca101d709009993a7cd"
