import subprocess
import sys

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
