"""The conformance kit: the reference set as a test harness for a port of the layers.

A port written in Python implements a small **adapter** and the kit drives it in process, with no
files (a port in another language writes result files and runs ``lrtdense reference verify``):

    class MyPort:
        name = "my-port"                                   # optional: shown in reports
        implements = {"families": ["lrt"],                 # optional: default everything
                      "quantities": ["outputs/*", "kl/*"],
                      "dtypes": ["float32", "float64"]}

        def compute(self, case):
            # case: lrtdense.conformance.ReferenceCase: case.meta (case.json), case.model,
            # case.x, case.g, case.params, case.noise (dicts of NumPy arrays with TFP's names)
            return {"outputs/mean": ..., "outputs/sample": ..., "kl/total": ...}

        def sample(self, case, draws, seed):               # optional: statistical mode
            return {"samples/outputs": ..., "samples/grads/<param>": ..., "samples/grads/x": ...,
                    "samples/kl": ...,                 # each draw's KL (SPEC.md section 7)
                    "outputs/mean": ..., "kl/total": ...}

``compute`` returns the expected keys it computes (SPEC.md section 6), each an array of the
case's shape and dtype (NumPy arrays, or anything with ``.detach().cpu().numpy()`` or
``__array__``, such as torch tensors and JAX arrays). ``implements`` declares what the port does
(``lrtdense.reference.families``: families such as "lrt", "priors", "train"; quantities as globs
on the keys; dtypes): every other row is reported as *not implemented*, never as a failure, and
``compute`` is not called for a case of which nothing is implemented. ``sample`` is the
statistical mode (SPEC.md section 7), for ports that cannot take noise as an input: ``draws``
independent sample-mode calls with the port's own generator seeded by ``seed``.

* ``check(adapter, ...)`` runs the cases and returns a ``Report`` (rows, per-family summary);
* ``load_adapter("pkg.module:Adapter")`` what ``--port`` and ``--lrtdense-port`` name;
* the pytest plugin (the top-level module ``_lrtdense_pytestplugin``, registered through the
  ``pytest11`` entry point; it imports lrtdense only when a port is named) turns the cases into
  one test per (case, quantity): ``pytest --lrtdense-port=pkg.module:Adapter``.
"""
from lrtdense.conformance.harness import Adapter, check, load_adapter, results_of
from lrtdense.reference.families import FAMILIES, Selection, family_of
from lrtdense.reference.reference_case import ReferenceCase

__all__ = ["Adapter", "check", "load_adapter", "results_of", "FAMILIES", "Selection", "family_of",
           "ReferenceCase"]
