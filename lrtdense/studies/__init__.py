"""Reproducible studies: ``lrtdense study <name>``.

* ``variance``: the gradient-variance study of Kingma et al. 2015 (arXiv 1506.02557, Table 1) on
  scikit-learn's bundled digits (``lrtdense.studies.variance``).
"""
