"""The seed program's retrier, in a module of its own so that it can be named as a target
(``seed_retrier:Retrier.execute``). No OpenTelemetry here."""

import time


class Retrier:
    def __init__(self, max_retries=5, delay=0.0):
        self.max_retries = max_retries
        self.delay = delay

    def execute(self, operation, *args):
        for attempt in range(1, self.max_retries + 1):
            try:
                return operation(*args)
            except TimeoutError as exc:
                print(f"Attempt {attempt} failed: {exc}")
                if attempt == self.max_retries:
                    raise
                time.sleep(self.delay)
        raise AssertionError("unreachable")
