"""Running one routine's argv: no shell, no stdin, a minimal environment, a fixed working
directory, a deadline and a cap on the output kept.

The process starts in a session of its own; on timeout (or if the caller is cancelled) the
whole session is killed, so a script's children go with it. Standard error is merged into the
output. Output past the cap is read and dropped, so a chatty command is not blocked on a full
pipe and still exits normally.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import trio

log = logging.getLogger(__name__)

DEFAULT_MAX_OUTPUT_BYTES = 65536
WORKING_DIRECTORY = "/"
BASE_ENVIRONMENT: Mapping[str, str] = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
}
TRUNCATED_NOTE = "[truncated]"
# After the process exits, how long its output may still take to reach end of file (a child it
# left running may hold the pipe open; its later output is not waited for).
DRAIN_GRACE_SECONDS = 0.5
# How long a killed process may take to be reaped before we stop waiting for it.
REAP_SECONDS = 5.0
_READ_CHUNK = 65536


@dataclass(frozen=True)
class RoutineResult:
    """What one invocation did. `exit_code` is None when the routine is a built-in, did not
    start, or was killed on timeout; negative when a signal ended it."""

    ok: bool
    exit_code: int | None
    output: str
    duration_ms: float


class OutputBuffer:
    """Keeps the first `limit` bytes written to it and counts the rest."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("max_output_bytes must not be negative")
        self.limit = limit
        self._kept = bytearray()
        self.dropped = 0

    def write(self, data: bytes) -> None:
        room = self.limit - len(self._kept)
        if room > 0:
            self._kept += data[:room]
        self.dropped += max(0, len(data) - max(room, 0))

    def text(self, *notes: str) -> str:
        """The output kept, as UTF-8 (bad bytes replaced), then a line per note."""
        text = self._kept.decode("utf-8", errors="replace")
        lines = [*notes]
        if self.dropped:
            lines.insert(0, TRUNCATED_NOTE)
        if not lines:
            return text
        separator = "" if not text or text.endswith("\n") else "\n"
        return text + separator + "\n".join(lines)


def capped_text(text: str, max_output_bytes: int, *notes: str) -> str:
    """A built-in's text held to the same cap as a command's output."""
    buffer = OutputBuffer(max_output_bytes)
    buffer.write(text.encode("utf-8", errors="replace"))
    return buffer.text(*notes)


def elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0


def _kill_session(process: trio.Process) -> None:
    # The leader is not reaped yet (returncode is None), so its pid is still its session's
    # process group id and cannot have been reused.
    if process.returncode is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:  # pragma: no cover - only if the group changed hands
        process.kill()


async def _drain(stream: trio.abc.ReceiveStream, buffer: OutputBuffer) -> None:
    while chunk := await stream.receive_some(_READ_CHUNK):
        buffer.write(chunk)


async def run_argv(
    argv: Sequence[str],
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
) -> RoutineResult:
    """Run `argv` (argv[0] an absolute path) and report how it went. Never raises for what the
    command does: a missing program, a non-zero exit or a timeout are results with ok False."""
    if not argv or not os.path.isabs(argv[0]):
        raise ValueError("argv[0] must be an absolute path")
    buffer = OutputBuffer(max_output_bytes)
    environment = {**BASE_ENVIRONMENT, **(env or {})}
    started = time.monotonic()
    try:
        process = await trio.lowlevel.open_process(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=WORKING_DIRECTORY,
            start_new_session=True,
            close_fds=True,
            shell=False,
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return RoutineResult(False, None, f"cannot run {argv[0]}: {reason}", elapsed_ms(started))

    stdout = process.stdout
    assert stdout is not None
    timed_out = False
    try:
        async with trio.open_nursery() as nursery:
            drained = trio.Event()

            async def read_output() -> None:
                await _drain(stdout, buffer)
                drained.set()

            nursery.start_soon(read_output)
            with trio.move_on_after(timeout_s) as deadline:
                await process.wait()
            if deadline.cancelled_caught:
                timed_out = True
                _kill_session(process)
                nursery.cancel_scope.cancel()
            else:
                with trio.move_on_after(DRAIN_GRACE_SECONDS):
                    await drained.wait()
                nursery.cancel_scope.cancel()
    finally:
        _kill_session(process)
        with trio.CancelScope(shield=True), trio.move_on_after(REAP_SECONDS):
            await process.wait()
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            await stdout.aclose()
    duration = elapsed_ms(started)
    if timed_out:
        note = f"[timed out after {timeout_s:g} s; killed]"
        return RoutineResult(False, None, buffer.text(note), duration)
    code = process.returncode
    return RoutineResult(code == 0, code, buffer.text(), duration)
