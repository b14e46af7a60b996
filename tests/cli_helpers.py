"""Running the real `p2pid` command line as a subprocess, as a user would."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def p2pid(
    home: Path, *args: str, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "P2PID_HOME"}
    result = subprocess.run(
        [sys.executable, "-m", "p2pid", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"p2pid {' '.join(args)} exited {result.returncode}: {result.stdout}{result.stderr}"
        )
    return result


def p2pid_json(home: Path, *args: str) -> Any:
    return json.loads(p2pid(home, "--json", *args).stdout)


DAEMON_SIDE = ("libp2p", "trio", "p2pid.store", "p2pid.net", "p2pid.node")


def imported_by_cli(
    home: Path, *args: str, watched: tuple[str, ...] = DAEMON_SIDE
) -> tuple[str, list[str]]:
    """Run `p2pid --home HOME ARGS` in a fresh interpreter: what it printed, and which of the
    `watched` modules it imported."""
    probe = (
        "import sys\n"
        "from p2pid.cli import main\n"
        f"main(['--home', {str(home)!r}, *{list(args)!r}])\n"
        f"print([m for m in {watched!r} if m in sys.modules], file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30
    )
    imported = result.stderr.strip().splitlines()[-1]
    return result.stdout, list(ast.literal_eval(imported))
