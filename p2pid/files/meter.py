"""How fast a transfer moves: bytes done, the rate over the last seconds, and when a progress
event is due."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from p2pid.events import now_ms
from p2pid.wire.file_views import FileProgress

PROGRESS_SECONDS: Final = 0.25
RATE_WINDOW_SECONDS: Final = 3.0


@dataclass
class Meter:
    size: int
    done: int = 0
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    published_at: float = 0.0

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        self.samples.append((now, self.done))
        while len(self.samples) > 2 and now - self.samples[0][0] > RATE_WINDOW_SECONDS:
            self.samples.popleft()

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def due(self) -> bool:
        """True at most every PROGRESS_SECONDS."""
        now = time.monotonic()
        if now - self.published_at < PROGRESS_SECONDS:
            return False
        self.published_at = now
        return True

    def event(self, file_id: bytes, direction: str) -> FileProgress:
        rate = self.rate()
        left = max(0, self.size - self.done)
        return FileProgress(
            at_ms=now_ms(),
            transfer_id=file_id.hex(),
            direction=direction,
            bytes_done=min(self.done, self.size),
            size=self.size,
            rate_bps=rate,
            eta_s=left / rate if rate > 0 else (0.0 if not left else None),
        )
