"""The app's own retry helper, traced through configuration alone.

`examples/myapp/net.py` is a hand-written `Retrier` with no OpenTelemetry in it. Naming its method in configuration
makes each `execute()` a retry operation and each call of the function it received an attempt:

    python examples/targets_retry.py

With no code change at all, under the launcher (the environment variable is read by the ``resilience_targets``
post-instrument entry point, also when none of the supported libraries is installed):

    PYTHONPATH=examples OTEL_PYTHON_RESILIENCE_RETRY_TARGETS=myapp.net:Retrier.execute \\
        OTEL_TRACES_EXPORTER=console opentelemetry-instrument python your_app.py

See docs/targets.md for the syntax and what is measured.
"""

from __future__ import annotations

import otel_resilience

handle = otel_resilience.setup(
    exporter="console",
    service_name="targets-retry",
    retry_targets=["myapp.net:Retrier.execute"],
)

# Imported after setup() on purpose: the module is patched by a post-import hook as it loads (importing it before
# works too; it is then patched at once).
from myapp.net import Retrier  # noqa: E402


class UserDirectory:
    """A dependency that is down for its first `outage` calls."""

    def __init__(self, outage: int) -> None:
        self.outage = outage
        self.calls = 0

    def fetch_user(self, user_id: int) -> dict[str, object]:
        self.calls += 1
        if self.calls <= self.outage:
            raise ConnectionError(f"user directory unavailable (call {self.calls})")
        return {"id": user_id, "name": "Ada"}


def main() -> None:
    recovering = UserDirectory(outage=2)
    print("fetched:", Retrier(max_retries=3, delay=0.02).execute(recovering.fetch_user, 1))
    down = UserDirectory(outage=10)
    try:
        Retrier(max_retries=1, delay=0.02).execute(down.fetch_user, 2)
    except ConnectionError as exc:
        print("gave up:", exc)
    handle.shutdown()


if __name__ == "__main__":
    main()
