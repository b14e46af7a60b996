import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_helpers import p2pid, p2pid_json


def test_cli_never_imports_libp2p_trio_or_the_store(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from p2pid.cli import main\n"
        f"main(['--home', {str(tmp_path)!r}, '--json', 'status'])\n"
        "daemon_side = ('libp2p', 'trio', 'p2pid.store', 'p2pid.net', 'p2pid.node')\n"
        "heavy = [m for m in daemon_side if m in sys.modules]\n"
        "print(heavy, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30
    )
    assert result.stderr.strip().splitlines()[-1] == "[]"


def test_no_daemon_is_a_json_error_with_its_own_exit_code(tmp_path: Path) -> None:
    result = p2pid(tmp_path, "--json", "status", check=False)
    assert result.returncode == 3
    assert json.loads(result.stdout)["error"]["code"] == 2001


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["ping"],
        ["ping", "x", "--count", "many"],
        ["ping", "x", "--count", "0"],
        ["init"],
    ],
)
def test_bad_arguments_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    result = p2pid(tmp_path, "--json", *args, check=False)
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"]["code"] == "usage"
    assert not (tmp_path / "p2pid.db").exists()


def test_human_errors_go_to_stderr(tmp_path: Path) -> None:
    result = p2pid(tmp_path, "status", check=False)
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.startswith("p2pid: error: no daemon is running")


def test_init_creates_an_identity_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    created = p2pid_json(home, "init", "--name", "Alice")
    assert created["name"] == "Alice" and created["protection"] == "key-file"
    again = p2pid(home, "--json", "init", "--name", "Eve", check=False)
    assert again.returncode == 1
    assert "already holds an identity" in json.loads(again.stdout)["error"]["message"]


def test_daemon_refuses_an_uninitialised_home(tmp_path: Path) -> None:
    result = p2pid(tmp_path / "nothing", "--json", "daemon", "--detach", "--no-mdns", check=False)
    assert result.returncode == 1
    assert "p2pid init" in json.loads(result.stdout)["error"]["message"]
