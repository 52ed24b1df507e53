"""The golden-value oracle: reference cases for ports of the layers (see reference_data/SPEC.md).

* ``lrtdense.reference.cases``        the case definitions and the function that computes them;
* ``lrtdense.reference.store``        reading (validated against the manifest) and writing cases;
* ``lrtdense.reference.verify``       comparing a port's results against the reference;
* ``lrtdense.reference.statistical``  the statistical mode, for ports that cannot inject noise;
* ``lrtdense.reference.cli``          ``lrtdense reference list|verify|path|spec|generate``.

The reference set ships inside the package (``lrtdense/reference_data/``; in a source checkout the
top-level ``reference_data/`` is a symlink to it), and ``lrtdense.reference.pin`` holds the sha256
of its manifest, so that an edited and re-signed copy of the shipped set is told apart from it.
"""
import os

from lrtdense.reference.pin import SHIPPED_MANIFEST_SHA256

SCHEMA_VERSION = 1

__all__ = ["SCHEMA_VERSION", "SHIPPED_MANIFEST_SHA256", "default_dir", "spec_path"]


def default_dir():
    """The reference set shipped with this lrtdense: ``<package>/reference_data`` (installed from a
    wheel or an sdist, or in a source checkout)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, os.pardir, "reference_data"))


def spec_path():
    """The shipped SPEC.md: everything a port author needs to read."""
    return os.path.join(default_dir(), "SPEC.md")
