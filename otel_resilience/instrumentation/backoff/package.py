_instruments = ("backoff >= 2.1, < 3",)
