"""Where the commands other than ``reference`` write (README: "Where commands write"): every
output path is checked before any work, a bad one is one line on stderr and exit code 2 with no
traceback, and a file committed to git is never written over (the functions behind the commands
take ``replace=True`` to regenerate one on purpose)."""
import os
import shutil
import subprocess
import sys

import pytest

from lrtdense import argtypes, demo
from lrtdense.studies import variance
from helpers import run_lrtdense

NEEDS_GIT = pytest.mark.skipif(shutil.which("git") is None, reason="needs git to commit a file")
COMMITTED = "is committed to git and is not written over; name another file (or move it away " \
            "first to replace it on purpose)"


run_cli = run_lrtdense


@pytest.fixture
def repo(tmp_path):
    """A git repository in tmp_path with a committed plot and a committed file of the study."""
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t",
                        "-c", "commit.gpgsign=false"] + list(args), check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "plot.png").write_bytes(b"committed")
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "variance.png").write_bytes(b"committed")
    (tmp_path / "untracked.png").write_bytes(b"mine")
    git("add", "plot.png", "study/variance.png")
    git("commit", "-q", "-m", "fixtures")
    return tmp_path


def one_error_line(err, prefix):
    """The one line of ``err``, which starts with ``prefix`` (no usage, no traceback)."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    return lines[0]


@NEEDS_GIT
def test_demo_refuses_a_committed_plot_before_training(repo, capsys, no_work):
    path = str(repo / "plot.png")
    code, out, err = run_cli(capsys, "demo", "--output", path)
    line = one_error_line(err, "lrtdense demo: error: argument --output: ")
    assert code == 2 and out == "" and line.endswith(f"{path!r} {COMMITTED}")
    assert (repo / "plot.png").read_bytes() == b"committed"
    with pytest.raises(ValueError, match="is committed to git"):
        demo.run(output=path, verbose=False)


@NEEDS_GIT
def test_a_relative_path_and_a_link_to_a_committed_file_are_refused(repo, capsys, no_work,
                                                                   monkeypatch):
    os.symlink(repo / "plot.png", repo / "link.png")
    monkeypatch.chdir(repo / "study")
    for name in ("../plot.png", "../link.png"):
        code, _, err = run_cli(capsys, "demo", "--output", name)
        assert code == 2 and one_error_line(err, "lrtdense demo").endswith(f"{name!r} {COMMITTED}")


@NEEDS_GIT
def test_untracked_files_are_written_over_and_replace_regenerates_a_committed_one(repo, capsys,
                                                                                monkeypatch):
    calls = []
    monkeypatch.setattr(demo, "run", lambda **kwargs: calls.append(kwargs))
    code, _, err = run_cli(capsys, "demo", "--output", str(repo / "untracked.png"))
    assert code == 0 and err == "" and calls[-1]["output"] == str(repo / "untracked.png")
    path = str(repo / "plot.png")
    assert argtypes.check_output_file(path, replace=True) is None
    assert argtypes.check_output_folder(str(repo / "study"), variance.OUTPUT_FILES,
                                        replace=True) is None
    with pytest.raises(ValueError, match="is committed to git"):
        argtypes.check_output_file(path)


@pytest.mark.parametrize("make,argv,message", [
    (lambda d: None, ["--output", "{d}/missing/x.png"], "the folder '{d}/missing' of "
                                                          "'{d}/missing/x.png' does not exist"),
    (lambda d: (d / "x.png").mkdir(), ["--output", "{d}/x.png"],
     "'{d}/x.png' is a folder; expected a file name"),
    (lambda d: None, ["--output", "{d}/x.txt"], "should end in one of .jpeg, .jpg, .pdf, .png, .svg"),
])
def test_demo_bad_output_paths_are_one_line_before_training(tmp_path, capsys, no_work, make,
                                                            argv, message):
    make(tmp_path)
    code, out, err = run_cli(capsys, "demo", *[a.format(d=tmp_path) for a in argv])
    line = one_error_line(err, "lrtdense demo: error: argument --output: ")
    assert code == 2 and line.endswith(message.format(d=tmp_path)) and out == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes over read-only files")
def test_demo_refuses_a_read_only_plot(tmp_path, capsys, no_work):
    plot = tmp_path / "x.png"
    plot.write_bytes(b"")
    plot.chmod(0o400)
    code, _, err = run_cli(capsys, "demo", "--output", str(plot))
    assert code == 2 and one_error_line(err, "lrtdense demo").endswith(
        f"{str(plot)!r} exists and cannot be overwritten")


@NEEDS_GIT
def test_study_refuses_a_committed_file_in_its_folder_before_running(repo, capsys, no_work):
    folder = str(repo / "study")
    code, out, err = run_cli(capsys, "study", "variance", "--short", "--out", folder)
    line = one_error_line(err, "lrtdense study variance: error: argument --out: ")
    target = os.path.join(folder, "variance.png")
    assert code == 2 and out == "" and line.endswith(f"{target!r} {COMMITTED}")
    assert (repo / "study" / "variance.png").read_bytes() == b"committed"
    with pytest.raises(ValueError, match="is committed to git"):
        variance.run(short=True, out=folder, verbose=False)


def test_study_writes_into_a_new_folder_and_over_its_own_files(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(variance, "_run", lambda *args: calls.append(args) or {})
    (tmp_path / "old").mkdir()
    for name in variance.OUTPUT_FILES:
        (tmp_path / "old" / name).write_text("a previous run")
    for folder in (str(tmp_path / "new" / "deeper"), str(tmp_path / "old")):
        code, _, err = run_cli(capsys, "study", "variance", "--short", "--out", folder)
        assert code == 0 and err == "" and calls[-1][1] == folder


def test_study_refuses_a_folder_where_a_file_goes(tmp_path, capsys, no_work):
    (tmp_path / "variance_table.md").mkdir()
    code, out, err = run_cli(capsys, "study", "variance", "--short", "--out", str(tmp_path))
    target = os.path.join(str(tmp_path), "variance_table.md")
    assert code == 2 and out == "" and one_error_line(err, "lrtdense study variance").endswith(
        f"{target!r} is a folder; the file 'variance_table.md' is written there")
    with pytest.raises(ValueError, match="is a folder; the file 'variance_table.md'"):
        variance.run(short=True, out=str(tmp_path), verbose=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes over read-only files")
def test_study_refuses_a_read_only_file_in_its_folder(tmp_path, capsys, no_work):
    png = tmp_path / "variance.png"
    png.write_bytes(b"")
    png.chmod(0o400)
    code, _, err = run_cli(capsys, "study", "variance", "--out", str(tmp_path))
    assert code == 2 and one_error_line(err, "lrtdense study variance").endswith(
        f"{str(png)!r} exists and cannot be overwritten")


def test_outside_a_repository_nothing_is_committed(tmp_path):
    """No repository (or no git at all): existing files are written over as before."""
    (tmp_path / "x.png").write_bytes(b"")
    argtypes.check_output_file(str(tmp_path / "x.png"))
    argtypes.check_output_folder(str(tmp_path), ("x.png",))


@NEEDS_GIT
def test_a_committed_file_is_refused_in_a_subprocess_too(repo):
    """The command line as a user runs it: one line, exit code 2, the file untouched."""
    proc = subprocess.run([sys.executable, "-m", "lrtdense", "demo", "--epochs", "1",
                           "--output", "plot.png"], cwd=repo, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"lrtdense demo: error: argument --output: 'plot.png' {COMMITTED}\n"
    assert (repo / "plot.png").read_bytes() == b"committed"
