import json
from pathlib import Path

import pytest

from tests.cli_helpers import imported_by_cli, p2pid, p2pid_json


def test_cli_never_imports_libp2p_trio_or_the_store(tmp_path: Path) -> None:
    _, imported = imported_by_cli(tmp_path, "--json", "status")
    assert imported == []


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
