"""One reference case in memory, with named views of its inputs (what an adapter receives)."""
import dataclasses

from lrtdense import tree
from lrtdense.reference.families import family_of

__all__ = ["ReferenceCase"]


@dataclasses.dataclass
class ReferenceCase:
    """A reference case: ``meta`` (case.json), ``inputs`` and ``expected`` (flat dicts key ->
    array, keys such as "params/kernel_posterior_loc" and "outputs/sample")."""
    name: str
    meta: dict
    inputs: dict
    expected: dict

    def __str__(self):
        return self.name

    @property
    def dtype(self):
        """The case's dtype, "float32" or "float64"."""
        return self.meta["dtype"]

    @property
    def family(self):
        """The case's family (``lrtdense.reference.families``): "lrt", "priors", "train", ..."""
        return family_of(self.meta)

    @property
    def kind(self):
        """The case's kind: "layer", "edge", "dropout", "network", "priors", ..."""
        return self.meta["kind"]

    @property
    def model(self):
        """The case's model config (a network case), or None for a single layer."""
        return self.meta.get("model")

    @property
    def x(self):
        """The input array (..., in), or None."""
        return self.inputs.get("x")

    @property
    def g(self):
        """The upstream cotangent of the outputs (the g of sum(g * outputs)), or None."""
        return self.inputs.get("g")

    @property
    def params(self):
        """The params, as a (nested) dict of arrays with TFP's names."""
        return tree.unflatten(self.inputs, "params")

    @property
    def noise(self):
        """Every random draw of the case, as a (nested) dict of arrays."""
        return tree.unflatten(self.inputs, "noise")

    @property
    def tolerances(self):
        """The per-quantity tolerances stored beside the case."""
        return self.meta["tolerances"]
