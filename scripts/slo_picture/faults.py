"""What goes wrong during the run, injected into the mocks over `/_mock/faults`
(testkit/src/mock_upstream/faults.rs has the format):

- a slow backend: m2 answers 300 ms later for a while (latency percentiles rise);
- a backend fault burst: m1 answers 503 to every gpt-4o call (Sluice retries them on m2 and
  ejects m1), while both backends fail some gpt-4o-mini calls with a 500 or a closed connection
  (retries that fail too, so clients see 5xx, and calls Sluice answers itself while both are
  ejected).
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass

SLOW_BACKEND = (0.15, 0.30)
FAULT_BURST = (0.45, 0.58)
# During the burst, each backend fails one gpt-4o-mini call this often, alternately with a 500
# and by closing the connection without an answer.
MINI_FAILURE_EVERY_S = 0.25
MINI_FAILURES = (
    {"kind": "status", "status": 500, "deployment": "gpt-4o-mini", "times": 1},
    {"kind": "reset", "deployment": "gpt-4o-mini", "times": 1},
)


class FaultError(RuntimeError):
    """A mock refused a fault or could not be reached."""


def control(mock_url: str, method: str, faults: object | None = None) -> None:
    data = None if faults is None else json.dumps(faults).encode()
    request = urllib.request.Request(
        f"{mock_url}/_mock/faults",
        data=data,
        method=method,
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
    except OSError as error:
        raise FaultError(f"{method} {mock_url}/_mock/faults failed: {error}") from error


@dataclass
class Window:
    start: float
    end: float
    on: bool = False

    def opens(self, progress: float) -> bool:
        if not self.on and self.start <= progress < self.end:
            self.on = True
            return True
        return False

    def closes(self, progress: float) -> bool:
        if self.on and progress >= self.end:
            self.on = False
            return True
        return False


class FaultTimeline:
    """Called with the run's progress (0..1) as it goes; opens and closes each fault window once."""

    def __init__(self, mocks: dict[str, str]) -> None:
        self.mocks = mocks
        self.slow = Window(*SLOW_BACKEND)
        self.burst = Window(*FAULT_BURST)
        self.last_mini_failure = 0.0
        self.mini_failures = 0

    def tick(self, progress: float) -> None:
        if self.slow.opens(progress):
            control(self.mocks["m2"], "POST", {"kind": "latency", "ms": 300})
        if self.slow.closes(progress):
            control(self.mocks["m2"], "DELETE")

        if self.burst.opens(progress):
            control(
                self.mocks["m1"], "POST", {"kind": "status", "status": 503, "deployment": "gpt-4o"}
            )
        if self.burst.on and time.monotonic() - self.last_mini_failure >= MINI_FAILURE_EVERY_S:
            self.last_mini_failure = time.monotonic()
            fault = MINI_FAILURES[self.mini_failures % len(MINI_FAILURES)]
            self.mini_failures += 1
            for mock in self.mocks.values():
                control(mock, "POST", fault)
        if self.burst.closes(progress):
            for mock in self.mocks.values():
                control(mock, "DELETE")
