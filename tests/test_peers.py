"""Real peer libraries through the oracle (examples/peers/peer_adapters.py): bayesian-torch's
LinearReparameterization and LinearFlipout and Blitz's BayesianLinear, each run on its reference
cases with the cases' noise injected. Skipped, with the reason, when a peer is not installed.

For each peer: every failing row is one of its KNOWN deviations (none unexplained), every known
deviation shows, the numerical confirmations hold, and the committed DEVIATIONS.md is what the run
generates."""
import importlib.util
import os
import sys

import pytest


PEERS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples", "peers")


def load_adapters():
    spec = importlib.util.spec_from_file_location("peer_adapters",
                                                  os.path.join(PEERS_DIR, "peer_adapters.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["peer_adapters"] = module
    spec.loader.exec_module(module)
    return module


pa = load_adapters()
_RESULTS = {}


def result(peer):
    reason = pa.installed(peer)
    if reason:
        pytest.skip(reason)
    if peer.name not in _RESULTS:
        _RESULTS[peer.name] = pa.deviation_table(peer)
    return _RESULTS[peer.name]


@pytest.fixture(params=pa.PEERS, ids=lambda p: p.name.replace(" ", "_"))
def peer(request):
    return request.param


def test_every_failure_is_a_known_deviation(peer):
    rows, table, unexplained, confirmed = result(peer)
    assert not unexplained, [(r.case, r.quantity, r.note) for r in unexplained]
    assert len({r.case for r in rows}) >= 17
    for deviation, failing in table:
        assert failing, f"{peer.name}: '{deviation.what}' no longer shows: update KNOWN"


def test_the_explanations_are_confirmed_numerically(peer):
    _, _, _, confirmed = result(peer)
    assert confirmed
    for what, (held, tried) in confirmed.items():
        assert tried and held == tried, (what, held, tried)


def test_forward_semantics_match_tfp_where_no_deviation_says_otherwise(peer):
    """The peers' sampled and mean outputs and grads/x agree with TFP to 1e-12 (float64) on every
    case but those a deviation names: the kernel math is TFP's."""
    rows, table, _, _ = result(peer)
    excused = {(r.case, r.quantity) for _, failing in table for r in failing}
    for r in rows:
        if r.quantity in ("outputs/sample", "outputs/mean", "grads/x") and (
                r.case, r.quantity) not in excused:
            assert r.passed, (r.case, r.quantity, r.note)


def test_committed_table_is_what_the_run_generates():
    results = {}
    for p in pa.PEERS:
        reason = pa.installed(p)
        if reason:
            pytest.skip(reason)
        results[p.name] = result(p)
    with open(os.path.join(PEERS_DIR, "DEVIATIONS.md")) as f:
        committed = f.read()
    assert pa.markdown(results) == committed, (
        "examples/peers/DEVIATIONS.md is stale: run python examples/peers/peer_adapters.py")


def test_noise_injection_refuses_an_unexpected_draw():
    torch = pytest.importorskip("torch", reason="the peer adapters need torch 2.13.0 and the peers extra")
    import numpy as np
    with pytest.raises(RuntimeError, match="expected normal"):
        with pa.injected([("normal", np.zeros((2, 3)))]):
            torch.empty(3, 2).normal_()
    with pytest.raises(RuntimeError, match="fewer draws"):
        with pa.injected([("normal", np.zeros(2)), ("normal", np.zeros(2))]):
            torch.empty(2).normal_()
    assert torch.Tensor.normal_ is not None and torch.empty(2).normal_().shape == (2,)
