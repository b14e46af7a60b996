"""Running the real `p2pid` command line as a subprocess, as a user would."""

from __future__ import annotations

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
