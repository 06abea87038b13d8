_instruments = ("aiobreaker >= 1.2, < 2",)
