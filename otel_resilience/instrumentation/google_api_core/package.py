_instruments = ("google-api-core >= 2.16, < 3",)
