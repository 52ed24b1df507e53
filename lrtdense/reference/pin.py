"""The sha256 of the shipped reference set's manifest.json (written by
``lrtdense reference generate lrtdense/reference_data --pin``; checked by every ``verify``).

The manifest holds the sha256 of every case file, so this one digest pins every byte of the
shipped set: an edited case whose manifest entry was re-signed still differs here.
"""
SHIPPED_MANIFEST_SHA256 = "7e5f2cd2baa009e6fc2faabba3f1b435b61fa5e1fe5ad4117f4c788eb6f0aa7f"
