# The single-file program: a hand-written retry class used by the script's own code, run as ``python app.py``.
# The tests write it out as app.py, with the last block either at module level or under a ``__main__`` guard.
import time


class Retrier:
    def __init__(self, max_retries=3, delay=0.1):
        self.max_retries = max_retries
        self.delay = delay

    def execute(self, fn, *args, **kwargs):
        last = None
        for attempt in range(1, self.max_retries + 2):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                last = exc
                time.sleep(self.delay * attempt)
        raise last


calls = {}


def unstable_service(i):
    """Fails i times for request i, then answers."""
    calls[i] = calls.get(i, 0) + 1
    if calls[i] <= i:
        raise ConnectionError(f"service {i} down ({calls[i]})")
    return i * 10


def retry_call(fn, *args):
    """A module-level helper, for the function targets."""
    for _ in range(3):
        try:
            return fn(*args)
        except Exception:
            time.sleep(0.001)
    return fn(*args)


# MAIN
retrier = Retrier(max_retries=5, delay=0.01)
for i in range(3):
    print("request", i, "->", retrier.execute(unstable_service, i), "after", calls[i], "calls")
print("helper ->", retry_call(unstable_service, 3), "after", calls[3], "calls")
