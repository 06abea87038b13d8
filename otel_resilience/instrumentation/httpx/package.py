_instruments = ("httpx >= 0.24, < 1",)
