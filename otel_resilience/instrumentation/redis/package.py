_instruments = ("redis >= 5.0, < 9",)
