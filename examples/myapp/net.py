"""The app's own retry helper, exactly as apps hand-write it. No OpenTelemetry here: otel_resilience traces it through
configuration alone (``myapp.net:Retrier.execute``)."""

import time


class Retrier:
    def __init__(self, max_retries=3, delay=0.1):
        self._max = max_retries
        self._delay = delay

    def execute(self, fn, *args, **kwargs):
        for attempt in range(1, self._max + 2):
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                last = e
                if attempt <= self._max:
                    time.sleep(self._delay * attempt)
        raise last
