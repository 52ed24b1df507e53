"""lrtdense.records: every settings record's config, repr, equality and hash follow from its
fields, and one from_config path rebuilds it, refusing unknown keys, missing keys and code."""
import json
import re

import numpy as np
import pytest

import lrtdense as L
from lrtdense import distributions as D
from lrtdense.losses import likelihood_from_config
from lrtdense.records import Record, from_config

NET = L.Sequential([L.DenseLocalReparameterization(3, "relu", dtype="float64"),
                    L.DenseFlipout(2, kernel_prior=L.TrainableNormalPrior(), dtype="float64")])

# (record with settings other than the defaults, the family's from_config, its twin, another)
RECORDS = [
    (L.RandomNormal(0.5, 0.2), D.initializer_from_config, L.RandomNormal(0.5, 0.2),
     L.RandomNormal(0.5, 0.3)),
    (L.Constant(-1.0), D.initializer_from_config, L.Constant(-1), L.Constant(1.0)),
    (L.NormalPosterior(L.Constant(1.0), L.RandomNormal(-4.0, 0.2)), D.posterior_from_config,
     L.NormalPosterior({"type": "constant", "value": 1.0}, L.RandomNormal(-4.0, 0.2)),
     L.NormalPosterior()),
    (L.DeterministicPosterior(L.Constant(0.5)), D.posterior_from_config,
     L.DeterministicPosterior(L.Constant(np.float32(0.5))), L.DeterministicPosterior()),
    (L.NormalPrior(0.1, 2.0), D.prior_from_config, L.NormalPrior(0.1, 2), L.NormalPrior()),
    (L.TrainableNormalPrior(L.Constant(0.0), L.RandomNormal(-5.0, 0.0)), D.prior_from_config,
     L.TrainableNormalPrior(L.Constant(0.0), L.RandomNormal(-5.0, 0.0)), L.TrainableNormalPrior()),
    (L.ScaleMixturePrior(0.25, 1.0, 0.01), D.prior_from_config,
     L.ScaleMixturePrior(np.float64(0.25), 1, 0.01), L.ScaleMixturePrior()),
    (L.LaplacePrior(0.0, 0.5), D.prior_from_config, L.LaplacePrior(0, 0.5), L.LaplacePrior()),
    (L.StudentTPrior(4.0, 0.0, 2.0), D.prior_from_config, L.StudentTPrior(4, 0, 2),
     L.StudentTPrior()),
    (L.ClosedFormKL(0.5), D.divergence_from_config, L.ClosedFormKL(np.float32(0.5)),
     L.ClosedFormKL()),
    (L.MonteCarloKL(0.5, "extra"), D.divergence_from_config, L.MonteCarloKL(0.5, "extra"),
     L.MonteCarloKL(0.5)),
    (L.GaussianLikelihood(0.3, learn_scale=True), likelihood_from_config,
     L.GaussianLikelihood(0.3, True), L.GaussianLikelihood(0.3)),
    (L.CategoricalLikelihood(), likelihood_from_config, L.CategoricalLikelihood(),
     L.GaussianLikelihood()),
    (NET, L.Sequential.from_config, L.Sequential(list(NET.layers)),
     L.Sequential(NET.layers[:1])),
    (L.Model(NET, L.GaussianLikelihood(0.3, learn_scale=True)), L.Model.from_config,
     L.Model(L.Sequential(NET.layers), L.GaussianLikelihood(0.3, learn_scale=True)),
     L.Model(NET, L.CategoricalLikelihood())),
]
IDS = [type(r[0]).__name__ for r in RECORDS]


@pytest.mark.parametrize("record,family,twin,other", RECORDS, ids=IDS)
def test_config_round_trip(record, family, twin, other):
    """config -> record -> config, through JSON text, by the family's function and the class's
    own from_config; byte-identical JSON."""
    config = record.to_config()
    assert config == record.get_config()
    text = json.dumps(config)
    for rebuild in (family, type(record).from_config):
        again = rebuild(json.loads(text))
        assert type(again) is type(record) and again == record
        assert json.dumps(again.to_config()) == text


@pytest.mark.parametrize("record,family,twin,other", RECORDS, ids=IDS)
def test_equality_hash_and_repr_follow_from_the_fields(record, family, twin, other):
    assert record == twin and hash(record) == hash(twin) and repr(record) == repr(twin)
    assert record != other and repr(record) != repr(other)
    assert eval(repr(record), vars(L)) == record                    # noqa: S307 (our own repr)
    with pytest.raises(AttributeError):
        record.extra = 1                                            # frozen


@pytest.mark.parametrize("cls", sorted({type(r[0]) for r in RECORDS}, key=lambda c: c.__name__))
def test_no_record_writes_its_own_config_or_comparison(cls):
    """Config methods come from Record, __init__/__eq__/__repr__/__hash__ from dataclasses
    (generated code, not written in a source file)."""
    assert issubclass(cls, Record)
    assert not set(vars(cls)) & {"to_config", "get_config", "from_config"}
    for name in ("__init__", "__eq__", "__repr__", "__hash__"):
        method = getattr(vars(cls)[name], "__wrapped__", vars(cls)[name])
        assert not method.__code__.co_filename.endswith(".py"), (cls, name)


def _refused(error, match, call, *args):
    with pytest.raises(error) as info:
        call(*args)
    message = str(info.value)
    assert re.search(match, message), message
    assert "\n" not in message, message


def test_unknown_keys_are_refused_naming_the_key_and_the_class():
    _refused(ValueError, r"^unexpected keys \['evil'\] in a NormalPrior config; expected a subset "
             r"of \['loc', 'scale'\]$", D.prior_from_config, {"type": "normal", "evil": 1})
    _refused(ValueError, r"^unexpected keys \['code'\] in a Model config",
             L.Model.from_config, {**RECORDS[-1][0].get_config(), "code": "import os"})
    _refused(ValueError, r"^unexpected keys \['stddev'\] in a Constant config",
             L.Constant.from_config, {"type": "constant", "stddev": 1.0})
    _refused(ValueError, r"^unexpected keys \['scale'\] in a CategoricalLikelihood config",
             likelihood_from_config, {"type": "categorical", "scale": 1.0})


def test_missing_keys_are_refused_naming_the_key_and_the_class():
    config = RECORDS[-1][0].get_config()
    _refused(ValueError, r"^missing keys \['likelihood'\] in a Model config$",
             L.Model.from_config, {"network": config["network"]})
    _refused(ValueError, r"^missing keys \['layers'\] in a Sequential config$",
             L.Sequential.from_config, {})
    # a field with a default may be left out: it takes the default
    assert D.prior_from_config({"type": "normal", "scale": 2.0}) == L.NormalPrior(0.0, 2.0)
    assert likelihood_from_config({"type": "gaussian"}) == L.GaussianLikelihood()


def test_code_is_refused_anywhere_in_a_config():
    _refused(ValueError, r"^key 'loc' of a NormalPrior config holds code \(.*\): configs never "
             r"hold code$", D.prior_from_config, {"type": "normal", "loc": lambda: 0.0})
    config = RECORDS[-1][0].get_config()
    config["network"]["layers"][0]["config"]["activation"] = np.tanh
    _refused(ValueError, r"^key 'network' of a Model config holds code \(<ufunc 'tanh'>\)",
             L.Model.from_config, config)
    _refused(ValueError, r"^key 'scale' of a GaussianLikelihood config holds code",
             likelihood_from_config, {"type": "gaussian", "scale": L.NormalPrior})


def test_a_record_in_a_config_is_a_setting_not_code():
    """A record (an initializer is callable) may stand for its config in a Python dict."""
    prior = D.prior_from_config({"type": "trainable_normal", "loc_initializer": L.Constant(1.0)})
    assert prior == L.TrainableNormalPrior(L.Constant(1.0))


def test_wrong_type_and_non_dict_configs():
    _refused(ValueError, r"^unknown prior type 'cauchy'; expected one of \['laplace', 'normal',",
             D.prior_from_config, {"type": "cauchy"})
    _refused(ValueError, r"^unknown likelihood type \[1\]", likelihood_from_config, {"type": [1]})
    _refused(TypeError, r"^a likelihood config must be a dict with a 'type' key, got \{\}$",
             likelihood_from_config, {})
    _refused(TypeError, r"^a Model config must be a dict, got \[1, 2\]$", L.Model.from_config,
             [1, 2])
    _refused(TypeError, r"^a Sequential config's 'layers' must be a list, got 'abc'$",
             L.Sequential.from_config, {"layers": "abc"})
    _refused(ValueError, r"^unknown Constant type 'random_normal'; expected one of \['constant'\]$",
             L.Constant.from_config, {"type": "random_normal"})


def test_a_field_that_is_not_plain_json_is_refused_by_to_config():
    from lrtdense.records import to_config
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Bad(Record):
        value: object = None
    assert to_config(Bad(1.5)) == {"value": 1.5} and from_config(Bad, {}) == Bad()
    _refused(ValueError, r"^Bad.value is code \(<built-in function len>\): configs never hold "
             r"code$", to_config, Bad(len))
    _refused(TypeError, r"^Bad.value is not plain JSON: array", to_config, Bad(np.zeros(2)))


def test_model_keeps_its_signature_and_wraps_a_single_layer():
    layer = L.DenseLocalReparameterization(2)
    model = L.Model(layer, L.CategoricalLikelihood())
    assert model.network == L.Sequential([layer]) and model.dtype == "float32"
    assert model == L.Model(network=L.Sequential((layer,)), likelihood=L.CategoricalLikelihood())
    assert {model: 1}[L.Model(layer, L.CategoricalLikelihood())] == 1
    _refused(TypeError, "likelihood must be a GaussianLikelihood or CategoricalLikelihood",
             L.Model, layer, "gaussian")
    _refused(ValueError, "^Sequential needs at least one layer$", L.Sequential, [])
