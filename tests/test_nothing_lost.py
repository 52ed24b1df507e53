"""Nothing lost, round 2: the reproducers of the second audit's defect classes in saving,
loading, checkpoints and fit, each as a test (the reference readers' are in
test_reference_hostile.py, the metrics' in test_predict.py and test_properties_metrics.py).

1. a learned noise scale keeps its shape () through fit, checkpoints, save and load, for every
   layer kind and likelihood option;
2. save and fit(checkpoint=) never delete a user's files named like a model's;
4. a model whose first layer is DenseVariational saves and checkpoints;
5. a load racing two writers sees one save, never a mix;
6. checkpoint files of two runs or two epochs, and malformed checkpoint metadata, are refused;
8. killed saves' leftovers are removed; SIGTERM and Ctrl-C stop after the step in progress with a
   final checkpoint that resumes bit for bit; a folder is owned by one training; a bad checkpoint
   path fails before training; a crash between the non-Linux path's two renames resumes from the
   previous checkpoint;
9. a config at the size limit loads (to an error) within the stated memory bound.
"""
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import lrtdense as L
from lrtdense import io as lio
from lrtdense.io import folders as io_folders, layout as io_layout
from lrtdense.losses import CategoricalLikelihood, GaussianLikelihood
from lrtdense.model import Model
from lrtdense.network import Sequential
from lrtdense.optimizers import Optimizer, adam
from lrtdense.predictive import predict
from lrtdense.training import Terminated, fit
from lrtdense.tree import flatten

HERE = os.path.dirname(os.path.abspath(__file__))

LAYERS = {
    "lrt": lambda: L.DenseLocalReparameterization(3, "tanh", dtype="float64"),
    "reparam": lambda: L.DenseReparameterization(3, "tanh", dtype="float64"),
    "flipout": lambda: L.DenseFlipout(3, "tanh", dtype="float64"),
    "dense_variational": lambda: L.DenseVariational(3, "tanh", kl_weight=0.1, dtype="float64"),
    "vdrop": lambda: L.DenseVariationalDropout(3, "tanh", dtype="float64"),
    "sparse_vd": lambda: L.DenseSparseVariationalDropout(3, "tanh", dtype="float64"),
}
LIKELIHOODS = {
    "gaussian": lambda: GaussianLikelihood(0.5),
    "gaussian_learned": lambda: GaussianLikelihood(0.5, learn_scale=True),
    "categorical": lambda: CategoricalLikelihood(),
}


def problem(layer="lrt", likelihood="gaussian_learned", n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4))
    lik = LIKELIHOODS[likelihood]()
    if isinstance(lik, CategoricalLikelihood):
        y, out = rng.integers(0, 2, n), 2
    else:
        y, out = x[:, :1] - x[:, 1:2] + 0.1 * rng.standard_normal((n, 1)), 1
    last = L.DenseLocalReparameterization(out, dtype="float64")
    model = Model(Sequential([LAYERS[layer](), last]), lik)
    return model, model.init(rng, 4), x, y


def shapes(params):
    return {k: (np.shape(v), np.asarray(v).dtype) for k, v in flatten(params).items()}


def same(a, b):
    fa, fb = flatten(a), flatten(b)
    return list(fa) == list(fb) and all(
        np.shape(fa[k]) == np.shape(fb[k]) and np.array_equal(fa[k], fb[k]) for k in fa)


KW = dict(epochs=3, batch_size=5, optimizer=adam(0.01), verbose=False)


# ----------------------------------------------------------------- 1. shapes through fit
@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_every_param_keeps_its_shape_through_fit_checkpoint_save_load_fit(tmp_path, layer,
                                                                          likelihood):
    model, params, x, y = problem(layer, likelihood)
    want = shapes(params)
    ckpt = str(tmp_path / "ckpt")
    trained, _ = fit(model, params, x, y, rng=np.random.default_rng(1), checkpoint=ckpt, **KW)
    assert shapes(trained) == want
    out = predict(model, trained, x, rng=np.random.default_rng(2), num_samples=3)
    if likelihood == "gaussian_learned":
        assert np.shape(trained["likelihood"]["untransformed_noise_scale"]) == ()
        assert isinstance(out["noise_scale"], float)
    lio.save(str(tmp_path / "model"), model, trained)
    model2, loaded = lio.load(str(tmp_path / "model"))
    assert shapes(loaded) == want and same(loaded, trained)
    again, _ = fit(model2, loaded, x, y, rng=np.random.default_rng(3), epochs=1, batch_size=8,
                   verbose=False, checkpoint=str(tmp_path / "ckpt2"))
    assert shapes(again) == want
    _, from_ckpt, state, meta = lio.load(ckpt, with_state=True)
    assert same(from_ckpt, trained) and shapes(state["m"]) == want
    assert meta["fit"]["step"] == 3 * 5


# ------------------------------------------------------- 2. a user's files are never deleted
def user_folders(tmp_path):
    """Folders whose entries are named like a model's but are a user's."""
    model, params, _, _ = problem()
    real = str(tmp_path / "real")
    lio.save(real, model, params)
    folders = {}
    own_config = tmp_path / "own_config"
    own_config.mkdir()
    (own_config / "config.json").write_text(json.dumps({"learning_rate": 0.1}))
    folders["a user's config.json"] = own_config
    own_npz = tmp_path / "own_npz"
    own_npz.mkdir()
    np.savez(own_npz / "params.npz", weights=np.arange(3.0))
    folders["a user's params.npz alone"] = own_npz
    mixed = tmp_path / "mixed"
    shutil.copytree(real, mixed)
    np.savez(mixed / "params.npz", weights=np.arange(3.0))
    folders["a model's config.json beside a user's params.npz"] = mixed
    dir_named = tmp_path / "dir_named"
    dir_named.mkdir()
    (dir_named / "config.json").mkdir()
    (dir_named / "config.json" / "notes.txt").write_text("mine")
    folders["a directory named config.json"] = dir_named
    return model, params, folders


def snapshot(folder):
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), folder)] = f.read()
    return out


def test_save_and_checkpoint_never_replace_a_users_files(tmp_path):
    model, params, folders = user_folders(tmp_path)
    _, _, x, y = problem()
    for what, folder in folders.items():
        before = snapshot(folder)
        with pytest.raises(ValueError, match="refusing to replace") as info:
            lio.save(str(folder), model, params)
        assert "\n" not in str(info.value), what
        called = []
        with pytest.raises(ValueError, match="refusing to replace"):
            fit(model, params, x, y, rng=np.random.default_rng(0), checkpoint=str(folder),
                callback=lambda *a: called.append(a), **KW)
        assert called == [], what                        # refused before any training
        assert snapshot(folder) == before, what
    names = {"a user's config.json": "config.json is not an lrtdense model config",
             "a user's params.npz alone": "it has no config.json",
             "a model's config.json beside a user's params.npz":
                 "params.npz is not the file config.json records",
             "a directory named config.json": "config.json is not a regular file"}
    for what, match in names.items():
        with pytest.raises(ValueError, match=match):
            lio.save(str(folders[what]), model, params)


def test_a_model_folder_is_still_replaced(tmp_path):
    model, params, _, _ = problem()
    path = str(tmp_path / "m")
    lio.save(path, model, params)
    _, other, _, _ = problem(seed=5)
    lio.save(path, model, other)
    assert same(lio.load(path)[1], other)
    os.remove(os.path.join(path, "params.npz"))           # a damaged model of ours: replaced
    lio.save(path, model, params)
    assert same(lio.load(path)[1], params)


# ---------------------------------------------- 4. DenseVariational as the first layer
def test_a_dense_variational_first_layer_saves_and_checkpoints(tmp_path):
    model, params, x, y = problem("dense_variational", "gaussian")
    lio.save(str(tmp_path / "m"), model, params)
    model2, loaded = lio.load(str(tmp_path / "m"))
    assert model2.get_config() == model.get_config() and same(loaded, params)
    reference, _ = fit(model, params, x, y, rng=np.random.default_rng(4), **KW)
    crash = lambda epoch, p, h: (_ for _ in ()).throw(RuntimeError("crash")) if epoch == 1 else None
    with pytest.raises(RuntimeError):
        fit(model, params, x, y, rng=np.random.default_rng(4), checkpoint=str(tmp_path / "c"),
            callback=crash, **KW)
    resumed, _ = fit(model, params, x, y, rng=np.random.default_rng(0),
                     checkpoint=str(tmp_path / "c"), **KW)
    assert same(resumed, reference)


# ---------------------------------------------------------- 5. a load racing two writers
def _writer(path, versions, which, count):
    model = versions["model"]
    for i in range(count):
        k = (which + 2 * i) % len(versions["params"])
        lio.save(path, model, versions["params"][k], state={"m": versions["params"][k]},
                 meta={"version": k})


def test_loads_racing_two_writers_each_see_one_save(tmp_path):
    model, _, _, _ = problem("lrt", "gaussian_learned")
    versions = {"model": model,
                "params": [model.init(np.random.default_rng(s), 4) for s in range(4)]}
    path = str(tmp_path / "m")
    lio.save(path, model, versions["params"][0], state={"m": versions["params"][0]},
             meta={"version": 0})
    ctx = multiprocessing.get_context("spawn")  # not fork: JAX or torch may run threads here
    writers = [ctx.Process(target=_writer, args=(path, versions, w, 150)) for w in (0, 1)]
    for w in writers:
        w.start()
    loads = torn = 0
    try:
        while any(w.is_alive() for w in writers) and loads < 3000:
            _, params, state, meta = lio.load(path, with_state=True)
            k = meta["version"]
            torn += not (same(params, versions["params"][k]) and same(state["m"], params))
            loads += 1
    finally:
        for w in writers:
            w.join(120)
    assert [w.exitcode for w in writers] == [0, 0]
    assert loads > 0 and torn == 0, (loads, torn)
    assert sorted(os.listdir(tmp_path)) == ["m"]            # no leftovers either


def test_a_load_whose_folder_is_replaced_midway_starts_again(tmp_path, monkeypatch):
    """The reader opened the folder, then a save swapped it and removed the old one: the open
    of params.npz fails, and load reads the new save whole."""
    model, old, _, _ = problem()
    _, new, _, _ = problem(seed=3)
    path = str(tmp_path / "m")
    lio.save(path, model, old)
    real_read_config = io_layout.read_config
    calls = []

    def save_in_between(f, where):
        config = real_read_config(f, where)
        if not calls:
            calls.append(1)
            lio.save(path, model, new)
        return config

    monkeypatch.setattr(io_layout, "read_config", save_in_between)
    monkeypatch.setattr(io_folders.Folder, "open", _open_lazily(io_folders.Folder.open))
    assert same(lio.load(path)[1], new) and calls == [1]


def _open_lazily(real_open):
    """Folder.open that opens params.npz only when config.json has been read (the worst
    interleaving: the save lands between the two opens)."""
    def open_(self, name, required):
        if name == "params.npz":
            return _Deferred(lambda: real_open(self, name, required))
        return real_open(self, name, required)
    return open_


class _Deferred:
    def __init__(self, opener):
        self.opener, self.f = opener, None

    def __getattr__(self, attr):
        if self.f is None:
            self.f = self.opener()
        return getattr(self.f, attr)

    def close(self):
        if self.f is not None:
            self.f.close()


# ------------------------------------------------ 6. mixed and malformed checkpoints
def checkpoint_of(tmp_path, name, seed, epochs=2, **kwargs):
    model, params, x, y = problem()
    path = str(tmp_path / name)
    fit(model, params, x, y, rng=np.random.default_rng(seed), checkpoint=path,
        **{**KW, "epochs": epochs, **kwargs})
    return model, params, x, y, path


@pytest.mark.parametrize("swapped", ["params.npz", "state.npz", "config.json"])
@pytest.mark.parametrize("source", ["another run", "another epoch"])
def test_checkpoint_files_of_two_runs_or_epochs_are_refused(tmp_path, swapped, source):
    model, params, x, y, path = checkpoint_of(tmp_path, "a", seed=1)
    other = checkpoint_of(tmp_path, "b", seed=2)[-1] if source == "another run" else \
        checkpoint_of(tmp_path, "b", seed=1, epochs=1)[-1]
    shutil.copy(os.path.join(other, swapped), os.path.join(path, swapped))
    with pytest.raises(ValueError, match="mixes the files of two saves") as info:
        fit(model, params, x, y, rng=np.random.default_rng(0), checkpoint=path, **KW)
    assert "\n" not in str(info.value)


def _edit_meta(path, edit):
    config_path = os.path.join(path, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    edit(config["meta"]["fit"])
    with open(config_path, "w") as f:
        json.dump(config, f)


MALFORMED = {
    "step 0 after 10 steps": (lambda m: m.update(step=0), "step is 0; 2 completed epochs"),
    "step 8.5": (lambda m: m.update(step=8.5), "step is 8.5"),
    "step as a string": (lambda m: m.update(step="10"), "step is '10'"),
    "no step": (lambda m: m.pop("step"), "expected the keys"),
    "history of another length": (lambda m: m["history"]["nll"].pop(), r"history\['nll'\]"),
    "history not a dict": (lambda m: m.update(history=[1]), "history must hold"),
    "history with text": (lambda m: m["history"]["loss"].__setitem__(0, "x"), r"history\['loss'\]"),
    "rng of another kind": (lambda m: m["rng"].update(bit_generator="MT19937"),
                            "state of a 'MT19937' generator"),
    "rng state garbage": (lambda m: m["rng"].update(state={"state": "x", "inc": None}),
                          "not a valid PCG64 state"),
    "rng not a dict": (lambda m: m.update(rng=7), "state of a 7 generator"),
    "position in another epoch": (lambda m: m.update(position={
        "epoch": 5, "step": 1, "order_rng": m["rng"], "sums": [0, 0, 0]}), "position's epoch is 5"),
    "position past the epoch": (lambda m: m.update(step=15, position={
        "epoch": 2, "step": 5, "order_rng": m["rng"], "sums": [0, 0, 0]}), "position's step is 5"),
    "position with bad sums": (lambda m: m.update(step=11, position={
        "epoch": 2, "step": 1, "order_rng": m["rng"], "sums": [0, 0]}), "sums must be 3"),
    "run id not a string": (lambda m: m.update(run=12), "run must be an id string"),
    "fit meta emptied": (lambda m: m.clear(), "holds a checkpoint of another training"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_checkpoint_metadata_is_refused(tmp_path, case):
    edit, match = MALFORMED[case]
    model, params, x, y, path = checkpoint_of(tmp_path, "a", seed=1)
    _edit_meta(path, edit)
    with pytest.raises(ValueError, match=match) as info:
        fit(model, params, x, y, rng=np.random.default_rng(0), checkpoint=path, **KW)
    assert "\n" not in str(info.value) and path in str(info.value)


# ---------------------------------- 8. leftovers, SIGTERM, Ctrl-C, ownership, paths, renames
def run_child(code, timeout=120):
    script = "import sys\nsys.path.insert(0, %r)\n" % HERE + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=timeout)


def test_a_killed_saves_temporary_folder_is_removed_by_the_next_save(tmp_path):
    path = str(tmp_path / "m")
    proc = run_child(f"""
        import os
        from lrtdense import io as lio
        from lrtdense.io import folders
        from test_nothing_lost import problem
        model, params, _, _ = problem()
        lio.save({path!r}, model, params)
        folders.put_in_place = lambda tmp, target: os._exit(9)     # killed before the commit
        lio.save({path!r}, model, params)
    """)
    assert proc.returncode == 9, proc.stderr
    leftovers = [e for e in os.listdir(tmp_path) if e != "m"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".m.saving-")
    model, params, _, _ = problem(seed=2)
    lio.save(path, model, params)                               # too recent to be judged stale
    assert len(os.listdir(tmp_path)) == 2
    old = time.time() - 10 * lio.STALE_SECONDS
    os.utime(tmp_path / leftovers[0], (old, old))
    lock = io_folders.lock(str(tmp_path / leftovers[0]), blocking=True)    # a save in progress
    try:
        lio.save(path, model, params)
        assert len(os.listdir(tmp_path)) == 2
    finally:
        io_folders.unlock(lock)
    lio.save(path, model, params)
    assert os.listdir(tmp_path) == ["m"] and same(lio.load(path)[1], params)


def test_a_temporary_folder_holding_a_users_file_is_not_removed(tmp_path):
    model, params, _, _ = problem()
    path = str(tmp_path / "m")
    odd = tmp_path / ".m.saving-1234"
    odd.mkdir()
    (odd / "notes.txt").write_text("mine")
    old = time.time() - 100
    os.utime(odd, (old, old))
    lio.save(path, model, params)
    assert (odd / "notes.txt").read_text() == "mine"


def _signalling(optimizer, at_update, signum):
    """The optimizer; its update number ``at_update`` (1-based) sends this process ``signum``."""
    count = [0]

    def update(state, grads, inplace=False):
        count[0] += 1
        if count[0] == at_update:
            os.kill(os.getpid(), signum)
        return optimizer.update(state, grads, inplace=inplace)

    return Optimizer(optimizer.init, update, optimizer.get_params, optimizer.hyperparams)


def test_sigterm_stops_after_the_step_with_a_checkpoint_that_resumes_bit_for_bit(tmp_path):
    model, params, x, y = problem("flipout", "gaussian_learned")
    kw = {**KW, "epochs": 4}
    reference, ref_hist = fit(model, params, x, y, rng=np.random.default_rng(7), **kw)
    path = str(tmp_path / "c")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with pytest.raises(Terminated) as info:                  # mid-epoch 2: step 3 of 5
        fit(model, params, x, y, rng=np.random.default_rng(7), checkpoint=path,
            **{**kw, "optimizer": _signalling(adam(0.01), 8, signal.SIGTERM)})
    assert info.value.code == 143 and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    state = info.value.fit_state
    assert (state.epoch, state.step) == (2, 3) and state.optimizer_state.step == 8
    meta = lio.load(path, with_state=True)[3]["fit"]
    assert meta["step"] == 8 and meta["position"]["step"] == 3
    out, hist = fit(model, params, x, y, rng=np.random.default_rng(0), checkpoint=path, **kw)
    assert same(out, reference) and hist["loss"] == ref_hist["loss"]


def test_sigterm_from_outside_exits_143_leaving_a_checkpoint(tmp_path):
    path = str(tmp_path / "c")
    ready = str(tmp_path / "ready")
    proc = subprocess.Popen([sys.executable, "-c", "import sys\nsys.path.insert(0, %r)\n" % HERE
                             + textwrap.dedent(f"""
        import numpy as np
        from lrtdense.training import fit
        from test_nothing_lost import problem, KW
        model, params, x, y = problem()
        def callback(epoch, p, h):
            if epoch == 0:
                open({ready!r}, "w").close()
        fit(model, params, x, y, rng=np.random.default_rng(7), checkpoint={path!r},
            callback=callback, **{{**KW, "epochs": 10 ** 6, "verbose": True}})
    """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600          # generous: only a broken child waits it out
        while not os.path.exists(ready) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr[-2000:]
    assert "terminated (SIGTERM) after" in stdout and "checkpoint written" in stdout
    assert "Traceback" not in stderr
    meta = lio.load(path, with_state=True)[3]["fit"]
    assert meta["step"] >= 5 and not meta["history"]["interrupted"]


def test_ctrl_c_mid_epoch_writes_a_checkpoint_that_resumes_bit_for_bit(tmp_path):
    model, params, x, y = problem("sparse_vd", "categorical")
    reference, ref_hist = fit(model, params, x, y, rng=np.random.default_rng(8), **KW)
    path = str(tmp_path / "c")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _, hist = fit(model, params, x, y, rng=np.random.default_rng(8), checkpoint=path,
                      **{**KW, "optimizer": _signalling(adam(0.01), 2, signal.SIGINT)})
    finally:
        signal.signal(signal.SIGINT, previous)
    assert hist["interrupted"] and hist["loss"] == []
    assert lio.load(path, with_state=True)[3]["fit"]["position"]["step"] == 2
    out, hist = fit(model, params, x, y, rng=np.random.default_rng(0), checkpoint=path, **KW)
    assert same(out, reference) and hist["loss"] == ref_hist["loss"]


def test_a_checkpoint_folder_is_owned_by_one_training(tmp_path):
    """Two trainings start on one empty folder; the first finishes; the second must not
    overwrite the first one's checkpoint when it comes to write its own."""
    model, params, x, y = problem()
    path = str(tmp_path / "c")
    first = {}

    def weight(epoch):                    # runs at the start of each epoch of the second
        if epoch == 0:
            first["params"], _ = fit(model, params, x, y, rng=np.random.default_rng(1),
                                     checkpoint=path, **KW)
        return 1.0

    with pytest.raises(ValueError, match="now holds a checkpoint of another training") as info:
        fit(model, params, x + 1, y, rng=np.random.default_rng(2), checkpoint=path,
            kl_weight=weight, **KW)
    assert info.value.fit_state.epoch == 1               # the second's work is not lost either
    assert same(lio.load(path)[1], first["params"])


def test_a_bad_checkpoint_path_fails_before_training(tmp_path):
    model, params, x, y = problem()
    called = []
    callback = lambda *a: called.append(a)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fit(model, params, x, y, rng=np.random.default_rng(0), callback=callback,
            checkpoint=str(tmp_path / "missing" / "c"), **KW)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a folder"):
        fit(model, params, x, y, rng=np.random.default_rng(0), callback=callback,
            checkpoint=str(tmp_path / "file"), **KW)
    with pytest.raises(ValueError, match="checkpoint_every must be an integer >= 1"):
        fit(model, params, x, y, rng=np.random.default_rng(0), callback=callback,
            checkpoint=str(tmp_path / "c"), checkpoint_every=0, **KW)
    assert called == []


def test_a_crash_between_the_two_renames_resumes_from_the_previous_checkpoint(tmp_path):
    """Without renameat2, a save sets the old folder aside, then moves the new one in; a kill
    between the two leaves no folder at the path. The next fit puts the previous one back."""
    path = str(tmp_path / "c")
    proc = run_child(f"""
        import os
        import numpy as np
        from lrtdense import io as lio
        from lrtdense.io import folders
        from lrtdense.training import fit
        from test_nothing_lost import problem, KW
        folders.exchange = lambda a, b: False
        real_rename, renames = os.rename, []
        def rename(a, b):
            renames.append((a, b))
            if len(renames) == 3:             # the second save's second rename
                os._exit(9)
            real_rename(a, b)
        os.rename = rename
        model, params, x, y = problem()
        fit(model, params, x, y, rng=np.random.default_rng(3), checkpoint={path!r}, **KW)
    """)
    assert proc.returncode == 9, proc.stderr
    assert not os.path.exists(path)
    model, params, x, y = problem()
    assert lio.load(path)[1].keys() == params.keys()          # load finds the set-aside folder
    reference, ref_hist = fit(model, params, x, y, rng=np.random.default_rng(3), **KW)
    out, hist = fit(model, params, x, y, rng=np.random.default_rng(0), checkpoint=path,
                    **{**KW, "verbose": True}, file=open(os.devnull, "w"))
    assert same(out, reference) and hist["loss"] == ref_hist["loss"]
    leftovers = [e for e in os.listdir(tmp_path) if e != "c"]     # the killed save's new folder
    assert len(leftovers) == 1
    old = time.time() - 10 * lio.STALE_SECONDS
    os.utime(tmp_path / leftovers[0], (old, old))
    lio.save(path, model, out)                                     # removed once stale
    assert os.listdir(tmp_path) == ["c"]


# ------------------------------------------------------------------ 9. the config's bound
def test_a_config_at_the_size_limit_loads_within_the_stated_bound(tmp_path):
    """MAX_CONFIG_BYTES of the densest JSON (empty dicts): an error, under an address-space limit
    of the interpreter's own size plus 160 MB (the module docstring states ~100 MB)."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("[" + "{}," * (lio.MAX_CONFIG_BYTES // 3 - 1) + "{}]")
    (folder / "params.npz").write_bytes(b"")
    proc = run_child(f"""
        import resource
        from lrtdense import io as lio
        status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
        size = int(status["VmSize"].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + (160 << 20), resource.RLIM_INFINITY))
        try:
            lio.load({str(folder)!r})
        except ValueError as err:
            print("refused:", err)
    """)
    assert proc.returncode == 0 and "not an lrtdense model config" in proc.stdout, proc.stderr


def test_save_refuses_meta_that_would_exceed_the_config_limit(tmp_path):
    model, params, _, _ = problem()
    with pytest.raises(ValueError, match="would exceed"):
        lio.save(str(tmp_path / "m"), model, params, meta={"h": [1.5] * (lio.MAX_CONFIG_BYTES // 4)})
    assert os.listdir(tmp_path) == []
