_instruments = ("urllib3 >= 2.0, < 3",)
