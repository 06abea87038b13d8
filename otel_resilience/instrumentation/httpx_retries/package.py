_instruments = ("httpx-retries >= 0.5, < 1",)
