_instruments = ("tenacity >= 8.4, < 10",)
