"""lrtdense.torch under torch.compile: no graph break, and the same numbers as eager.

* every layer class, compiled with ``fullgraph=True`` (a graph break is an error) on the
  aot_eager backend (portable: no C++ compiler), gives eager's outputs and divergence bit for bit
  with the same noise;
* a training step of a two-layer model drawing its own noise (torch's default generator) gives
  eager's loss and gradients bit for bit from the same seed (aot_eager keeps torch's random ops);
* slow: the inductor backend (a C++ compiler needed) with ``fallback_random``, within rounding.
Skipped when torch is not installed.
"""
import shutil

import pytest

torch = pytest.importorskip("torch", reason="lrtdense.torch needs torch (pip install "
                                             "'lrtdense[torch]')")

import lrtdense.torch as LT                                                # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch.manual_seed(0)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", sorted(LT.LAYERS))
def test_every_layer_compiles_without_a_graph_break_to_eagers_numbers(name):
    layer = LT.LAYERS[name](4, 3, dtype="float64")
    x = torch.randn(5, 4, dtype=torch.float64)
    noise = layer.sample_noise(x.shape, torch.Generator().manual_seed(1))

    def call(x, noise):
        return layer(x, noise=noise), layer.divergence

    assert torch._dynamo.explain(call)(x, noise).graph_break_count == 0
    out, kl = torch.compile(call, backend="aot_eager", fullgraph=True)(x, noise)
    want_out, want_kl = call(x, noise)
    assert torch.equal(out, want_out) and torch.equal(kl, want_kl)
    assert out.requires_grad                          # still in the autograd graph


def _model():
    return torch.nn.Sequential(LT.DenseLocalReparameterization(4, 8, "relu", dtype="float64"),
                               LT.DenseFlipout(8, 2, dtype="float64"))


def _step(model, x):
    out = model(x)
    return torch.mean(out * out) + LT.divergence(model) / 100


def _loss_and_grads(step, model, x, seed):
    torch.manual_seed(seed)
    loss = step(model, x)
    return loss.detach(), torch.autograd.grad(loss, list(model.parameters()))


def test_a_training_step_drawing_its_own_noise_compiles_to_eagers_numbers():
    model = _model()
    x = torch.randn(16, 4, dtype=torch.float64)
    assert torch._dynamo.explain(_step)(model, x).graph_break_count == 0
    compiled = torch.compile(_step, backend="aot_eager", fullgraph=True)
    loss, grads = _loss_and_grads(compiled, model, x, seed=5)
    want_loss, want_grads = _loss_and_grads(_step, model, x, seed=5)
    assert torch.equal(loss, want_loss)
    assert all(torch.equal(a, b) for a, b in zip(grads, want_grads))
    other, _ = _loss_and_grads(compiled, model, x, seed=6)
    assert not torch.equal(other, loss)                  # the noise is drawn, not baked in


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="the inductor backend needs a C++ compiler")
def test_inductor_with_torchs_random_ops_matches_eager():
    """Inductor draws its own random numbers unless ``fallback_random``; with it, the fused
    kernels give eager's loss and gradients within rounding (measured: 5.6e-17)."""
    import torch._inductor.config as inductor_config
    model = _model()
    x = torch.randn(16, 4, dtype=torch.float64)
    old = inductor_config.fallback_random
    inductor_config.fallback_random = True
    try:
        compiled = torch.compile(_step, backend="inductor")
        loss, grads = _loss_and_grads(compiled, model, x, seed=5)
    finally:
        inductor_config.fallback_random = old
    want_loss, want_grads = _loss_and_grads(_step, model, x, seed=5)
    torch.testing.assert_close(loss, want_loss, rtol=1e-13, atol=1e-15)
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
