_instruments = ("openai >= 3.0, < 4",)
