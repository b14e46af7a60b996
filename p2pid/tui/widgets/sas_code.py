"""The short authentication string: seven emoji (symbol over name) and three big numbers.

Both people look at their own screen and say whether the two codes are the same; either the
emoji or the numbers is enough. The wording of a verification's end lives here too."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Digits, Static

from p2pid.wire.verification import CancelReason, VerificationOutcome

EMOJI_COUNT = 7
DECIMAL_COUNT = 3

_REASONS = {
    CancelReason.MISMATCH: "the codes were said to differ",
    CancelReason.USER_CANCELLED: "it was cancelled",
    CancelReason.TIMEOUT: "nobody finished in time",
    CancelReason.BUSY: "another verification with them is running",
    CancelReason.BAD_COMMITMENT: "their key did not match what they committed to",
    CancelReason.BAD_MAC: "the two sides do not hold the same keys",
    CancelReason.PROTOCOL_ERROR: "their device answered out of turn",
    CancelReason.DISCONNECTED: "the connection broke",
}


def outcome_text(outcome: VerificationOutcome) -> str:
    if outcome.verified:
        return f"✓ {outcome.name} is verified: you compared codes, so it really is them."
    why = _REASONS.get(outcome.reason, "it ended") if outcome.reason else "it ended"
    side = " (on their side)" if outcome.by_peer else ""
    return f"✗ {outcome.name} is NOT verified: {why}{side}."


class SasCode(Vertical):
    """Blank until `show` gets a code; `emoji` and `decimals` hold what it shows."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.emoji: list[tuple[str, str]] = []
        self.decimals: list[int] = []

    def compose(self) -> ComposeResult:
        with Horizontal(id="sas-emoji"):
            for index in range(EMOJI_COUNT):
                yield Static("", classes="sas-emoji", id=f"sas-emoji-{index}")
        yield Static("or compare the numbers", classes="sas-or")
        with Horizontal(id="sas-decimals"):
            for index in range(DECIMAL_COUNT):
                yield Digits("", classes="sas-number", id=f"sas-number-{index}")

    def show(self, emoji: Sequence[tuple[str, str]], decimals: Sequence[int]) -> None:
        self.emoji, self.decimals = list(emoji), list(decimals)
        for index, cell in enumerate(self.query(".sas-emoji").results(Static)):
            symbol, name = emoji[index] if index < len(emoji) else ("", "")
            cell.update(f"{symbol}\n{name}")
        for index, digits in enumerate(self.query(".sas-number").results(Digits)):
            digits.update(str(decimals[index]) if index < len(decimals) else "")
