"""``load`` and ``read_meta``: a model folder read in bounded memory, its files checked to come
from one save (see ``lrtdense.io``)."""
import os

from lrtdense import tree
from lrtdense.io import folders, layout
from lrtdense.io.npz import read_npz

__all__ = ["load", "read_meta"]

_LOAD_ATTEMPTS = 5              # a load that raced a save starts again this many times at most


def load(path, *, with_state=False):
    """Reads a model folder written by ``save``, in bounded memory (see the module docstring).

    Args:
      path: the folder.
      with_state: also read the state and meta saved beside the model.
    Returns:
      ``(model, params)``; with ``with_state=True``, ``(model, params, state, meta)`` where
      state is the saved nested dict of arrays and meta the saved dict ({} for either when
      none was saved).
    Raises:
      ValueError: a missing or malformed file, or files of two saves (the message names the
        file and the problem).
    """
    for _ in range(_LOAD_ATTEMPTS):
        try:
            return _load_once(path, with_state)
        except folders.Replaced:
            continue                            # a save replaced the folder while it was read
    raise ValueError(f"{path} was replaced by other saves {_LOAD_ATTEMPTS} times while it was "
                     f"being read; try again when the process writing it pauses")


def _load_once(path, with_state):
    target = folders.readable_folder(path)
    folder = folders.Folder(target)
    files = []
    try:
        config_path = os.path.join(path, "config.json")
        params_path = os.path.join(path, "params.npz")
        state_path = os.path.join(path, "state.npz")
        config_file = folder.open("config.json", required=True)
        files.append(config_file)
        params_file = folder.open("params.npz", required=True)
        files.append(params_file)
        state_file = folder.open("state.npz", required=False) if with_state else None
        if state_file is not None:
            files.append(state_file)
        config = layout.read_config(config_file, config_path)
        recorded = config.get("files")
        if recorded is not None:
            layout.check_files(recorded, config, config_path)
            _check_same_save(folder, path, config_file, recorded,
                             {"params.npz": params_file, "state.npz": state_file})
        model, input_dim = layout.model_from_config(config, config_path)
        spec = layout.param_spec(model, input_dim, config_path)
        layout.check_listing(config["params"], {k: layout.spec_json(*v) for k, v in spec.items()},
                       f"{config_path}: the 'params' listed do not match the model's for "
                       f"input_dim {input_dim}")
        flat = read_npz(params_file, params_path, spec)
        params = {"network": {}, "likelihood": {}}
        params.update(tree.unflatten(flat))
        if not with_state:
            return model, params
        meta = config.get("meta", {})
        if "state" not in config:
            if state_file is not None:
                raise ValueError(f"{state_path} exists but {config_path} declares no state")
            return model, params, {}, meta
        structure, state_spec = layout.state_spec(config["state"], config_path)
        if state_file is None:
            raise ValueError(f"{state_path} does not exist; {config_path} declares a state")
        state_flat = read_npz(state_file, state_path, state_spec)
        return model, params, tree.map_with_path(lambda path, _: state_flat[path], structure), meta
    finally:
        for f in files:
            f.close()
        folder.close()


def read_meta(path):
    """The meta saved in the model folder ``path`` ({} if none), or None if ``path`` holds no
    config.json; only the config is read (bounded, as ``load`` reads it).

    Raises:
      ValueError: a malformed config.json.
    """
    config_path = os.path.join(folders.readable_folder(path), "config.json")
    try:
        with open(config_path, "rb") as f:
            return layout.read_config(f, config_path).get("meta", {})
    except (FileNotFoundError, NotADirectoryError):
        return None


def _check_same_save(folder, path, config_file, recorded, opened):
    """Raises unless every file matches the size and digest config.json records: Replaced if
    config.json changed meanwhile (a save raced this load), a ValueError otherwise."""
    for name, f in opened.items():
        if f is None or name not in recorded:
            continue
        problem = layout.digest_problem(f, recorded[name])
        if not problem:
            continue
        if _changed(folder, path, config_file):
            raise folders.Replaced()
        raise ValueError(f"{os.path.join(path, name)} is not the file {path}/config.json "
                         f"records ({problem}): the folder mixes the files of two saves (copied "
                         f"in from another run or epoch?); restore the matching file or save "
                         f"again")


def _changed(folder, path, config_file):
    """True if the config.json now at ``path`` is not the one that was read."""
    try:
        with open(os.path.join(path, "config.json"), "rb") as f:
            now = os.fstat(f.fileno())
    except OSError:
        return True
    then = os.fstat(config_file.fileno())
    return (now.st_ino, now.st_dev) != (then.st_ino, then.st_dev)
