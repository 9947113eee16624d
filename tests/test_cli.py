import subprocess
import sys

import pytest

from spikeforge import __version__
from spikeforge.cli import main


def test_version_and_help(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert capsys.readouterr().out.strip() == f"spikeforge {__version__}"
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out


def test_python_dash_m_behaves_the_same():
    out = subprocess.run([sys.executable, "-m", "spikeforge", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == f"spikeforge {__version__}"


def test_a_closed_pipe_ends_quietly():
    code = ("import sys; from spikeforge.cli import main; "
            "sys.exit(main(['recipes']))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head` exiting before the command writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err


@pytest.mark.parametrize("argv, needles", [
    (["train", "fc-lif", "--lr", "abc"], ["--lr 'abc' is not a number", "spikeforge train --help"]),
    (["train", "fc-lif", "--epochs", "one"], ["--epochs 'one' is not a whole number"]),
    (["train", "fc-lif", "-b", "1.5"], ["-b '1.5' is not a whole number"]),
    (["train", "fc-lif", "--lr"], ["--lr needs a value"]),
    (["train", "fc-lif", "--bogus", "3"], ["spikeforge train does not take --bogus 3",
                                           "spikeforge train --help"]),
    (["eval", "RUN", "--checkpoint", "worst"], ["--checkpoint 'worst' is not one of 'best', "
                                                "'last'", "spikeforge eval --help"]),
    (["export", "RUN"], ["the following arguments are required: --nir"]),
    (["data", "info", "DIR", "--depth", "2"], ["spikeforge data info does not take --depth 2"]),
    (["data", "frobnicate"], ["ACTION 'frobnicate' is not one of"]),
    (["trian"], ["COMMAND 'trian' is not one of", "'train'", "spikeforge --help"]),
])
def test_a_command_line_that_does_not_parse_is_one_sentence_and_exit_2(argv, needles, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("spikeforge: error: ") and err.count("\n") == 1, err
    assert "usage:" not in err and err.rstrip().endswith("--help.")
    for needle in needles:
        assert needle in err, err


def test_running_out_of_memory_is_one_sentence_and_exit_2(monkeypatch, capsys):
    import torch

    from spikeforge.commands import recipes

    def allocate_4_eib(args):  # beyond any address space: PyTorch's allocator refuses at once
        torch.empty(2**62, dtype=torch.uint8)

    monkeypatch.setattr(recipes, "run", allocate_4_eib)
    assert main(["recipes"]) == 2
    err = capsys.readouterr().err
    assert err == ("spikeforge: error: the machine ran out of memory (it asked for 4.29e+09 GiB);"
                   " lower --batch-size or -T (or the model's size: --channels, hidden), or run "
                   "where more memory is free.\n")


def test_a_runtime_error_that_is_not_about_memory_still_shows_its_traceback(monkeypatch):
    from spikeforge.commands import recipes

    def bug(args):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(recipes, "run", bug)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        main(["recipes"])


@pytest.mark.parametrize("argv, message", [
    (["train", "fc-lif", "--out-dir", ""], "--out-dir is given an empty value; give one or "
                                           "leave the flag out."),
    (["train", "fc-lif", "--config="], "--config is given an empty value; give one or leave "
                                       "the flag out."),
    (["train", "--resume", "", "--epochs", "2"], "--resume is given an empty value; give one "
                                                 "or leave the flag out."),
    (["eval", ""], "an argument is empty (\"\"); give a path or value there."),
])
def test_an_empty_value_is_refused_not_taken_as_the_default(argv, message, capsys, tmp_path,
                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)  # where runs/fc-lif would have gone
    assert main(argv) == 2
    assert capsys.readouterr().err == f"spikeforge: error: {message}\n"
    assert list(tmp_path.iterdir()) == []
