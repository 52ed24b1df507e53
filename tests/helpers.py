"""Shared test helpers: central finite differences along random directions."""
import importlib.util
import os

import numpy as np
from autograd import grad


def directional_fd_check(f, args, argnum, rng, *, h=1e-6, rtol=1e-6, atol=1e-9, directions=2):
    """Checks grad(f, argnum) against central differences along random directions.

    ``args[argnum]`` may be an array or a dict of arrays; for a dict every entry is checked on its
    own. Returns the worst relative error seen.
    """
    g = grad(f, argnum)(*args)
    target = args[argnum]
    keys = list(target) if isinstance(target, dict) else [None]
    worst = 0.0
    for key in keys:
        for _ in range(directions):
            base = target[key] if key is not None else target
            v = rng.standard_normal(base.shape)

            def shifted(t):
                moved = base + t * v
                new_args = list(args)
                if key is None:
                    new_args[argnum] = moved
                else:
                    new_args[argnum] = {**target, key: moved}
                return f(*new_args)

            fd = (shifted(h) - shifted(-h)) / (2 * h)
            analytic = np.sum((g[key] if key is not None else g) * v)
            err = abs(fd - analytic)
            assert err <= atol + rtol * max(abs(fd), abs(analytic)), (
                f"gradient w.r.t. {key or 'arg %d' % argnum}: finite differences {fd!r}, "
                f"autograd {analytic!r}, abs error {err:.3g}")
            worst = max(worst, err / max(abs(fd), abs(analytic), 1e-300))
    return worst


EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def load_example(name):
    """Imports examples/<name>.py as a module (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def replay_completed_steps(model, params, x, y, steps_per_epoch, seed=1,
                           batch_size=5):
    """Params after replaying fit's first steps by hand: ``steps_per_epoch[e]`` minibatches of
    epoch e, each epoch shuffled by rng.permutation as fit does, with adam(1e-3) and
    make_step. For checking what an interrupted fit kept."""
    from lrtdense.optimizers import adam
    from lrtdense.training import make_step

    opt = adam(1e-3)
    step = make_step(model, opt, num_examples=len(x))
    state, rng = opt.init(params), np.random.default_rng(seed)
    for n_steps in steps_per_epoch:
        order = rng.permutation(len(x))
        for i in range(n_steps):
            idx = order[i * batch_size:(i + 1) * batch_size]
            state = step(state, x[idx], y[idx], rng)[0]
    return opt.get_params(state)


def run_lrtdense(capsys, *argv):
    """(exit code, stdout, stderr) of ``lrtdense ARGV`` run in this process, argparse's exits
    caught; what was printed before is discarded first."""
    from lrtdense import cli
    capsys.readouterr()
    try:
        code = cli.main(list(argv))
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err
