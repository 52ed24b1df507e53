"""The golden-value oracle: reference cases for ports of the layers (see reference_data/SPEC.md).

* ``lrtdense.reference.cases``    the case definitions and the function that computes them;
* ``lrtdense.reference.store``    reading and writing cases and the manifest (no pickles);
* ``lrtdense.reference.verify``   comparing a port's results against the reference;
* ``lrtdense.reference.cli``      ``lrtdense reference generate|verify``.
"""
import os

SCHEMA_VERSION = 1


def default_dir():
    """The ``reference_data`` directory of a source checkout (the committed reference set)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, os.pardir, os.pardir, "reference_data"))
