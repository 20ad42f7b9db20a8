"""Progress and cancellation plumbing shared by every long engine step.

The engine never sees a QgsProcessingFeedback: algorithms wrap theirs in a :class:`Progress`, tests use
the default no-op one. Cancellation is an exception so that no caller can forget to stop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional


class Cancelled(Exception):
    """Raised by :meth:`Progress.check` once the user asked to cancel."""


@dataclass
class Progress:
    """Reports a fraction in [0, 1] of the *whole* run and relays cancel requests.

    ``sub(a, b)`` returns a child whose 0..1 maps onto this one's a..b, so a step can report its own
    fraction without knowing where it sits in the pipeline.
    """

    on_progress: Optional[Callable[[float], None]] = None
    on_message: Optional[Callable[[str], None]] = None
    is_canceled: Callable[[], bool] = field(default=lambda: False)
    start: float = 0.0
    end: float = 1.0

    def report(self, fraction: float) -> None:
        if self.on_progress is not None:
            f = min(max(float(fraction), 0.0), 1.0)
            self.on_progress(self.start + (self.end - self.start) * f)

    def log(self, message: str) -> None:
        if self.on_message is not None:
            self.on_message(message)

    def check(self) -> None:
        if self.is_canceled():
            raise Cancelled("cancelled by the user")

    def step(self, fraction: float) -> None:
        """Report and check for cancel in one call: what every loop iteration does."""
        self.check()
        self.report(fraction)

    def sub(self, a: float, b: float) -> "Progress":
        span = self.end - self.start
        return Progress(self.on_progress, self.on_message, self.is_canceled,
                        self.start + span * a, self.start + span * b)
