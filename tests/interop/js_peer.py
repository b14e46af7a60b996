"""Run the js-libp2p peer in tests/interop/js against a p2pid node.

The JS side is `js/ping.mjs` (js-libp2p 2.x: TCP, Noise or plaintext, Yamux, identify, ping).
Its dependencies are pinned by `js/package-lock.json` and installed with `npm ci` on first use.
`js_ping` blocks: from trio, call it through `trio.to_thread.run_sync` so the host under test
keeps serving. `js_listener` is a trio context manager running a listening JS node.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import trio

JS_DIR = Path(__file__).resolve().parent / "js"
PING_SCRIPT = JS_DIR / "ping.mjs"
MIN_NODE_MAJOR = 20
NPM_CI_TIMEOUT = 600.0
READY_TIMEOUT = 20.0
EXIT_TIMEOUT = 10.0


def node_unavailable_reason() -> str | None:
    """Why the JS peer cannot run here (node or npm missing or too old), or None if it can."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if p is None)
        return f"{missing} not found on PATH: the js-libp2p interop test needs Node.js >= 20"
    try:
        out = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        major = int(out.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        return f"cannot tell the Node.js version ({node} --version): {e}"
    if major < MIN_NODE_MAJOR:
        return f"Node.js {out.strip()} is too old: the js-libp2p peer needs >= {MIN_NODE_MAJOR}"
    return None


def _installed() -> bool:
    # npm ci writes node_modules/.package-lock.json last; an older one predates the lockfile.
    hidden = JS_DIR / "node_modules" / ".package-lock.json"
    lock = JS_DIR / "package-lock.json"
    return hidden.is_file() and hidden.stat().st_mtime >= lock.stat().st_mtime


def ensure_node_modules() -> Path | None:
    """Install the JS peer's pinned dependencies if needed; return the JS directory.

    Returns None when node/npm are unavailable (the caller skips). Raises RuntimeError when
    npm is there but `npm ci` fails: that is a broken setup, not a reason to skip.
    """
    if node_unavailable_reason() is not None:
        return None
    if _installed():
        return JS_DIR
    npm = shutil.which("npm")
    assert npm is not None
    try:
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT,
        )
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"npm ci in {JS_DIR} took over {NPM_CI_TIMEOUT:.0f} s") from e
    if proc.returncode != 0 or not _installed():
        raise RuntimeError(
            f"npm ci in {JS_DIR} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return JS_DIR


def js_ping(
    target_multiaddr: str,
    count: int = 3,
    timeout: float = 30,
    *,
    security: Literal["noise", "plaintext"] = "noise",
) -> dict[str, Any]:
    """Dial `target_multiaddr` (with /p2p/<PeerId>) from js-libp2p, identify it, ping it.

    Returns the script's JSON result: {"ok": True, "rtts_ms": [...], "agent": ...,
    "protocols": [...], "peer": ..., "security": ..., "muxer": ..., ...} or
    {"ok": False, "error": ...}, plus "exit_code" and, on failure, "stderr" (its tail).
    The script enforces `timeout` itself; the process is killed a little after it.
    """
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found on PATH")
    argv = [
        node,
        str(PING_SCRIPT),
        "--count",
        str(count),
        "--timeout",
        str(timeout),
        "--security",
        security,
        target_multiaddr,
    ]
    try:
        proc = subprocess.run(
            argv, cwd=JS_DIR, capture_output=True, text=True, timeout=timeout + 10
        )
    except subprocess.TimeoutExpired as e:
        return {"ok": False, "error": f"ping.mjs did not exit within {timeout + 10} s: {e}"}
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    result: dict[str, Any]
    try:
        result = json.loads(lines[-1])
        if not isinstance(result, dict):
            raise ValueError(f"not a JSON object: {lines[-1]!r}")
    except (IndexError, ValueError) as e:
        result = {"ok": False, "error": f"no JSON result line from ping.mjs ({e})"}
    result["exit_code"] = proc.returncode
    if not result.get("ok") or proc.returncode != 0:
        result["stderr"] = proc.stderr[-4000:]
    return result


@contextlib.asynccontextmanager
async def js_listener(
    listen_addr: str = "/ip4/127.0.0.1/tcp/0", lifetime: float = 60
) -> AsyncIterator[dict[str, Any]]:
    """Run a listening js-libp2p node (Noise, Yamux, identify, ping) for the block.

    Yields its ready line: {"ok": True, "peer": "<PeerId>", "listening": ["<maddr>/p2p/..."]}.
    The node stops when the block ends (its stdin is closed) or after ``lifetime`` seconds.
    Raises RuntimeError if it does not come up within READY_TIMEOUT.
    """
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found on PATH")
    argv = [node, str(PING_SCRIPT), "--listen", listen_addr, "--timeout", str(lifetime)]
    with tempfile.TemporaryFile() as stderr:
        proc = await trio.lowlevel.open_process(
            argv, cwd=JS_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
        )
        try:
            assert proc.stdout is not None and proc.stdin is not None
            line = b""
            with trio.move_on_after(READY_TIMEOUT):
                while not line.endswith(b"\n"):
                    chunk = await proc.stdout.receive_some(4096)
                    if not chunk:
                        break
                    line += chunk
            try:
                ready = json.loads(line)
            except ValueError:
                ready = None
            if not isinstance(ready, dict) or not ready.get("ok"):
                stderr.seek(0)
                tail = stderr.read()[-4000:].decode(errors="replace")
                raise RuntimeError(f"the JS listener did not come up: {line!r}\n{tail}")
            yield ready
        finally:
            with trio.CancelScope(shield=True):
                if proc.stdin is not None:
                    await proc.stdin.aclose()
                with trio.move_on_after(EXIT_TIMEOUT):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
