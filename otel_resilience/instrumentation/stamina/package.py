_instruments = ("stamina >= 24.2, < 27",)
