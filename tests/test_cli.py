"""The command line: every bad argument is one line on stderr and exit code 2, with no traceback;
an unknown flag shows the usage of the subcommand it was given to; output paths are checked
before any training; --help shows the defaults; a warning for --samples 1."""
import argparse
import os
import subprocess
import sys
import types

import pytest

from lrtdense import argtypes, cli, demo
from helpers import run_lrtdense


run_cli = run_lrtdense


BAD_VALUES = [
    (["demo", "--epochs", "-5"], "lrtdense demo: error: argument --epochs: expected an integer >= 1, got '-5'"),
    (["demo", "--epochs", "0"], "argument --epochs: expected an integer >= 1, got '0'"),
    (["demo", "--epochs", "2.5"], "argument --epochs: expected an integer >= 1, got '2.5'"),
    (["demo", "--epochs", "1e3"], "argument --epochs: expected an integer >= 1, got '1e3'"),
    (["demo", "--epochs", ""], "argument --epochs: expected an integer >= 1, got ''"),
    (["demo", "--hidden", "0"], "argument --hidden: expected an integer in [1, 10000], got '0'"),
    (["demo", "--hidden", "100000000"], "argument --hidden: expected an integer in [1, 10000]"),
    (["demo", "--hidden", "ten"], "argument --hidden: expected an integer in [1, 10000], got 'ten'"),
    (["demo", "--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
    (["demo", "--seed", "0x10"], "argument --seed: expected an integer >= 0, got '0x10'"),
    (["demo", "--samples", "0"], "argument --samples: expected an integer in [1, 10000], got '0'"),
    (["demo", "--samples", "10001"], "argument --samples: expected an integer in [1, 10000]"),
    (["demo", "--learning-rate", "0"], "argument --learning-rate: expected a number in (0, 1], got '0'"),
    (["demo", "--learning-rate", "-0.001"], "argument --learning-rate: expected a number in (0, 1]"),
    (["demo", "--learning-rate", "-1e-3"], "argument --learning-rate: expected one argument"),
    (["demo", "--learning-rate", "nan"], "argument --learning-rate: expected a number in (0, 1], got 'nan'"),
    (["demo", "--learning-rate", "inf"], "argument --learning-rate: expected a number in (0, 1], got 'inf'"),
    (["demo", "--learning-rate", "2"], "argument --learning-rate: expected a number in (0, 1], got '2'"),
    (["demo", "--learning-rate", "fast"], "argument --learning-rate: expected a number in (0, 1]"),
    (["demo", "--output", "/nonexistent/x.png"],
     "argument --output: the folder '/nonexistent' of '/nonexistent/x.png' does not exist"),
    (["demo", "--output", "/proc/x.png"], "argument --output: cannot write in the folder '/proc'"),
    (["demo", "--output", "."], "argument --output: '.' is a folder; expected a file name"),
    (["demo", "--output", "plot.txt"],
     "argument --output: 'plot.txt' should end in one of .jpeg, .jpg, .pdf, .png, .svg"),
    (["demo", "--output", "plot"], "argument --output: 'plot' should end in one of"),
    (["demo", "--epochs"], "argument --epochs: expected one argument"),
    (["study", "variance", "--seed", "-1"],
     "lrtdense study variance: error: argument --seed: expected an integer >= 0, got '-1'"),
    (["study", "variance", "--seed", "x"], "argument --seed: expected an integer >= 0, got 'x'"),
    (["study", "variance", "--out", "/proc/x"], "argument --out: cannot write in the folder '/proc'"),
    (["study", "variance", "--out", "/etc/hostname"],
     "argument --out: '/etc/hostname' exists and is not a folder"),
    (["study", "variance", "--out", "/etc/hostname/sub"], "is not a folder"),
    (["study", "nope"], "lrtdense study: error: argument STUDY: invalid choice: 'nope'"),
    (["reference", "nope"], "lrtdense reference: error: argument reference_command: invalid choice"),
    (["dem"], "lrtdense: error: argument COMMAND: invalid choice: 'dem' (choose from 'demo', "
              "'reference', 'study', 'bench')"),
]


@pytest.mark.parametrize("argv,message", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_a_bad_value_is_one_line_and_exit_2(capsys, no_work, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and len(lines[0]) < 200, err
    assert message in lines[0], err


BAD_FLAGS = [
    (["demo", "--bogus"], "lrtdense demo", "unrecognized arguments: --bogus"),
    (["demo", "extra"], "lrtdense demo", "unrecognized arguments: extra"),
    (["demo", "--epochz", "5"], "lrtdense demo", "unrecognized arguments: --epochz 5"),
    (["study", "variance", "--bogus"], "lrtdense study variance", "unrecognized arguments: --bogus"),
    (["study"], "lrtdense study", "the following arguments are required: STUDY"),
    (["reference", "verify"], "lrtdense reference verify",
     "one of the arguments results --port is required"),
    (["reference", "list", "--bogus"], "lrtdense reference list", "unrecognized arguments: --bogus"),
    ([], "lrtdense", "the following arguments are required: COMMAND"),
    (["--bogus", "demo"], "lrtdense", "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("argv,prog,message", BAD_FLAGS, ids=[" ".join(a) for a, _, _ in BAD_FLAGS])
def test_a_bad_flag_prints_the_usage_of_its_own_subcommand(capsys, no_work, argv, prog, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith(f"usage: {prog} ") and err.splitlines()[-1] == f"{prog}: error: {message}", err
    if prog != "lrtdense":
        assert "usage: lrtdense [-h]" not in err
    assert "Traceback" not in err


def test_no_traceback_in_a_real_subprocess():
    """The installed entry point (python -m lrtdense), a few bad arguments in parallel."""
    cases = [["demo", "--epochs", "-5"], ["study", "variance", "--seed", "x"], ["demo", "--bogus"]]
    procs = [subprocess.Popen([sys.executable, "-m", "lrtdense", *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for argv in cases]
    for argv, proc in zip(cases, procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (argv, err)
        assert "Traceback" not in err and out == "", (argv, err)
        last = err.splitlines()[-1]
        assert last.startswith("lrtdense ") and ": error: " in last and len(last) < 200, (argv, err)
        assert len(err.splitlines()) == (1 if argv[-1] != "--bogus" else 3), (argv, err)


def test_help_shows_the_defaults(capsys):
    code, out, _ = run_cli(capsys, "demo", "--help")
    assert code == 0
    text = " ".join(out.split())
    for default in ("(default: 0)", "(default: 8000)", "(default: 50)", "(default: 0.003)",
                    "(default: 500)", "(default: lrtdense_demo.png)"):
        assert default in text, default
    code, out, _ = run_cli(capsys, "study", "variance", "--help")
    assert code == 0 and "(default: out/variance_study)" in " ".join(out.split())
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.startswith("lrtdense ")


def test_output_is_checked_before_training(tmp_path, no_work):
    with pytest.raises(ValueError, match="does not exist"):
        demo.run(output=str(tmp_path / "missing" / "plot.png"), verbose=False)
    with pytest.raises(ValueError, match="is a folder"):
        demo.run(output=str(tmp_path), verbose=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path, capsys, no_work):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        code, _, err = run_cli(capsys, "demo", "--output", str(folder / "x.png"))
    finally:
        folder.chmod(0o700)
    assert code == 2 and "cannot write in the folder" in err


def test_samples_1_warns_that_the_epistemic_std_is_zero(capsys):
    code, out, err = run_cli(capsys, "demo", "--epochs", "2", "--samples", "1", "--output", "")
    assert code == 0 and "held-out" in out
    assert err.splitlines() == ["lrtdense demo: warning: --samples 1 makes the epistemic std 0 "
                                "everywhere (one sample has no spread): its band and printed "
                                "value mean nothing; use 2 or more"]
    assert "epistemic std: 0.00 on average" in out
    code, _, err = run_cli(capsys, "demo", "--epochs", "2", "--samples", "2", "--output", "")
    assert code == 0 and err == ""


def test_divergence_and_ctrl_c_end_without_a_traceback(capsys, monkeypatch):
    def diverge(*args, **kwargs):
        raise FloatingPointError("at epoch 3, step 1: non-finite value: loss=nan\nmore")
    monkeypatch.setattr(demo, "fit", diverge)
    code, _, err = run_cli(capsys, "demo", "--output", "")
    assert code == 1 and err == ("lrtdense demo: error: training diverged (at epoch 3, step 1: "
                                 "non-finite value: loss=nan); try a smaller --learning-rate\n")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(demo, "fit", interrupt)
    code, _, err = run_cli(capsys, "demo", "--output", "")
    assert code == 130 and err == "lrtdense demo: interrupted\n"


def test_a_command_module_needs_only_add_arguments_and_main(capsys, monkeypatch):
    """The COMMANDS contract the reference CLI relies on, with nested subcommands."""
    seen = []

    def add_arguments(parser):
        sub = parser.add_subparsers(dest="what", required=True)
        sub.add_parser("go").add_argument("--n", type=argtypes.integer(1), default=1)

    fake = types.ModuleType("fake_command")
    fake.add_arguments, fake.main = add_arguments, lambda args: seen.append(args.n) or 7
    monkeypatch.setitem(sys.modules, "fake_command", fake)
    monkeypatch.setitem(cli.COMMANDS, "fake", ("fake_command", "a test command"))
    assert run_cli(capsys, "fake", "go", "--n", "3")[0] == 7 and seen == [3]
    code, _, err = run_cli(capsys, "fake", "go", "--n", "0")
    assert code == 2 and err == "lrtdense fake go: error: argument --n: expected an integer >= 1, got '0'\n"
    code, _, err = run_cli(capsys, "fake", "go", "--m")
    assert code == 2 and err.startswith("usage: lrtdense fake go")


def test_argument_types():
    assert argtypes.integer(1)("5") == 5 and argtypes.integer(0, 3)(" 3 ") == 3
    assert argtypes.number(0, 1)("1") == 1.0 and argtypes.number(0, low_open=False)("0") == 0.0
    for parse, text in [(argtypes.integer(1), "0"), (argtypes.integer(0, 3), "4"),
                        (argtypes.number(0, 1), "0"), (argtypes.number(0), "-inf"),
                        (argtypes.number(0, 1), "1.0000001")]:
        with pytest.raises(argparse.ArgumentTypeError, match=f"got '{text}'"):
            parse(text)
    assert argtypes.output_file()("") == ""
