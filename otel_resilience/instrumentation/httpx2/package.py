_instruments = ("httpx2 >= 2.0, < 3",)
