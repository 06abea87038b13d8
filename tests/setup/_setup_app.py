"""An app's own retry helper for the setup() target tests (no OpenTelemetry here)."""


def retry_call(operation, attempts=3):
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except ConnectionError:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")
