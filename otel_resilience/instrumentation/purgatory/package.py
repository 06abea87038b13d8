_instruments = ("purgatory >= 3.0, < 4",)
