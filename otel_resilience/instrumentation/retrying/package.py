_instruments = ("retrying >= 1.3.3, < 2",)
