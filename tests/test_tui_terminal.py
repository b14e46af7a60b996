"""The TUI in a real terminal (tmux): the invite QR code scans off the screen, Ctrl+Q quits.

A daemon runs first (loopback, mDNS off) so `p2pid` connects to it. tmux runs `p2pid --home H`
in a 100x40 pane on a server of its own (its socket in the test's directory, no user config);
the pane is captured with its colours, the QR code rebuilt from the upper half blocks (foreground
the top module, background the bottom one) and decoded with zxing-cpp: it must be the invite the
daemon holds. Every wait polls with a deadline.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from p2pid.qr import image_from_modules, read_qr_codes
from tests.cli_helpers import p2pid_json
from tests.daemons import running_daemon

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(
    TMUX is None, reason="tmux is not installed (scripts/system-deps.sh installs it)"
)

DEADLINE_SECONDS = 30.0
SESSION = "p2pid"
BLACK, WHITE = (0, 0, 0), (255, 255, 255)
_SGR_OR_CHARACTER = re.compile(r"\x1b\[([0-9;:]*)m|(.)", re.DOTALL)

Colour = tuple[int, int, int] | str | None  # RGB, a palette colour ("p16"), or the default
Cell = tuple[str, Colour, Colour]


class Tmux:
    def __init__(self, directory: Path) -> None:
        assert TMUX is not None
        self.command = [TMUX, "-S", str(directory / "tmux.sock"), "-f", os.devnull]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.command, *args], capture_output=True, text=True, check=check, timeout=30
        )

    def start(self, command: list[str], width: int, height: int, status_file: Path) -> None:
        """Run `command` in a pane; once it exits, its exit status is written to `status_file`
        (by the pane's shell: tmux 3.3 sometimes leaves an exited pane process unreaped, and
        then has no status to report)."""
        environment = {
            key: value
            for key, value in os.environ.items()
            # COLUMNS/LINES (set by some test runners) would override the pane's real size.
            if key
            not in ("TMUX", "P2PID_HOME", "NO_COLOR", "TEXTUAL_COLOR_SYSTEM", "COLUMNS", "LINES")
        }
        environment["COLORTERM"] = "truecolor"  # as a modern terminal says it draws 24-bit colour
        size = ["-x", str(width), "-y", str(height)]
        shell_command = f"{shlex.join(command)}; echo $? > {shlex.quote(str(status_file))}"
        new_session = ["new-session", "-d", "-s", SESSION, *size, shell_command]
        # Keep the pane once the app exits, to see it dead.
        keep_pane = ["set-option", "-w", "-t", SESSION, "remain-on-exit", "on"]
        subprocess.run(
            [*self.command, *new_session, ";", *keep_pane], env=environment, check=True, timeout=30
        )

    def capture(self, colours: bool = False) -> str:
        return self("capture-pane", "-p", *(["-e"] if colours else []), "-t", SESSION).stdout

    def pane(self, variable: str) -> str:
        return self("display-message", "-p", "-t", SESSION, f"#{{{variable}}}").stdout.strip()


def wait_for(condition: Callable[[], bool], what: str, seen: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last seen:\n{seen()}")
        time.sleep(0.1)


# Reading the captured pane as a terminal shows it.


def cells_of(captured: str) -> list[list[Cell]]:
    """Each line's cells as (character, foreground, background); the colour state carries over
    from line to line, as capture-pane writes it."""
    foreground: Colour = None
    background: Colour = None
    lines = []
    for line in captured.split("\n"):
        cells: list[Cell] = []
        for match in _SGR_OR_CHARACTER.finditer(line):
            parameters, character = match.groups()
            if character is not None:
                cells.append((character, foreground, background))
                continue
            codes = [int(code or 0) for code in re.split("[;:]", parameters)]
            while codes:
                code = codes.pop(0)
                if code == 0:
                    foreground = background = None
                elif code in (38, 48):
                    mode = codes.pop(0)
                    colour: Colour = (
                        (codes.pop(0), codes.pop(0), codes.pop(0))
                        if mode == 2
                        else f"p{codes.pop(0)}"
                    )
                    if code == 38:
                        foreground = colour
                    else:
                        background = colour
                elif code == 39:
                    foreground = None
                elif code == 49:
                    background = None
                elif 30 <= code <= 37 or 90 <= code <= 97:
                    foreground = f"p{code}"
                elif 40 <= code <= 47 or 100 <= code <= 107:
                    background = f"p{code}"
        lines.append(cells)
    return lines


def qr_block(lines: list[list[Cell]]) -> tuple[int, int, list[list[Cell]]]:
    """(first column, last column + 1, cells) of the QR code: the widest run of upper half blocks
    in explicit black or white, and the lines under it with the same run."""

    def runs(cells: list[Cell]) -> list[tuple[int, int]]:
        found, start = [], None
        for index, (character, fg, bg) in enumerate([*cells, (" ", None, None)]):
            explicit = character == "▀" and fg in (BLACK, WHITE) and bg in (BLACK, WHITE)
            if explicit and start is None:
                start = index
            elif not explicit and start is not None:
                found.append((start, index))
                start = None
        return found

    candidates = [(index, run) for index, cells in enumerate(lines) for run in runs(cells)]
    if not candidates:
        return 0, 0, []
    first, (start, end) = max(candidates, key=lambda candidate: candidate[1][1] - candidate[1][0])
    block = []
    for cells in lines[first:]:
        if (start, end) not in runs(cells):
            break
        block.append(cells[start:end])
    return start, end, block


def decode_block(block: list[list[Cell]]) -> list[str]:
    """Two module rows per line (top: the foreground, bottom: the background), decoded."""
    modules: list[list[bool]] = []
    for row in block:
        modules.append([fg == BLACK for _, fg, _ in row])
        modules.append([bg == BLACK for _, _, bg in row])
    if not modules:
        return []
    return read_qr_codes(image_from_modules(modules, scale=4))


def test_the_invite_qr_scans_off_a_real_terminal_and_ctrl_q_quits(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    tmux = Tmux(tmp_path)
    with running_daemon(home, "Alice"):
        status = tmp_path / "exit-status"
        tmux.start([sys.executable, "-m", "p2pid", "--home", str(home)], 100, 40, status)
        try:
            # The footer's keys (its end may be cut at this width, after F8/F9 came).
            wait_for(lambda: "f2 Chats" in tmux.capture(), "the app", tmux.capture)
            tmux("send-keys", "-t", SESSION, "F4")
            decoded: list[str] = []

            def qr_decodes() -> bool:
                decoded[:] = decode_block(qr_block(cells_of(tmux.capture(colours=True)))[2])
                return bool(decoded)

            wait_for(qr_decodes, "a QR code on the screen", tmux.capture)
            invites = p2pid_json(home, "invites")
            assert decoded == [invite["code"] for invite in invites]
            lines = cells_of(tmux.capture(colours=True))
            _, end, block = qr_block(lines)
            quiet = [*block[0], *block[-1], *(row[0] for row in block), *(row[-1] for row in block)]
            assert {(fg, bg) for _, fg, bg in quiet} == {(WHITE, WHITE)}  # the quiet zone
            beside = "".join(character for cells in lines for character, _, _ in cells[end:])
            assert decoded[0] in "".join(beside.split())  # the text code beside it, wrapped

            tmux("send-keys", "-t", SESSION, "C-q")
            wait_for(lambda: status.exists() and status.read_text() != "", "the app to exit")
            assert status.read_text().strip() == "0", tmux.capture()
            wait_for(lambda: tmux.pane("pane_dead") == "1", "the pane to close", tmux.capture)
        finally:
            tmux("kill-server", check=False)
