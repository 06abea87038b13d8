_instruments = ("anthropic >= 2.0, < 3",)
