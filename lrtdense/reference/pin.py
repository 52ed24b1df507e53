"""The sha256 of the shipped reference set's manifest.json (written by
``lrtdense reference generate lrtdense/reference_data --pin``; checked by every ``verify``).

The manifest holds the sha256 of every case file, so this one digest pins every byte of the
shipped set: an edited case whose manifest entry was re-signed still differs here.
"""
SHIPPED_MANIFEST_SHA256 = "6d34764c0bef1fb0ee274d7c8fbc6f7cec0503a02d65dde36df52b69752f0859"
