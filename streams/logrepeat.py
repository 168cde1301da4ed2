"""A log filter for outages: while Kafka or ClickHouse is away the client libraries repeat the same
error thousands of times a minute (aiokafka logged ~65 000 lines in a 60 s broker outage). The
first occurrence passes; the repeats of one message template within ``window`` seconds are counted
and summarised once the window ends ("... repeated 4123 times in 10 s")."""
from __future__ import annotations

import logging
import threading
import time

NOISY_PREFIXES = ("aiokafka", "kafka", "faust.transport", "mode")


class RepeatFilter(logging.Filter):
    def __init__(self, window: float = 10.0) -> None:
        super().__init__()
        self.window = window
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # key -> (window start, suppressed)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        with self._lock:
            start, suppressed = self._seen.get(key, (0.0, 0))
            if now - start < self.window:
                self._seen[key] = (start, suppressed + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 10_000:  # bounded: forget the oldest half
                for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:5000]:
                    del self._seen[old]
        if suppressed:
            record.msg = f"{record.msg} [the previous message repeated {suppressed} times in {self.window:g} s]"
        return True


def install(window: float = 10.0) -> RepeatFilter:
    """Attach one filter to the client libraries' loggers (every one created so far, and their parents)."""
    shared = RepeatFilter(window)
    names = [n for n in list(logging.Logger.manager.loggerDict) if n.startswith(NOISY_PREFIXES)]
    for name in {*names, *NOISY_PREFIXES}:
        logger = logging.getLogger(name)
        if shared not in logger.filters:
            logger.addFilter(shared)
    return shared
