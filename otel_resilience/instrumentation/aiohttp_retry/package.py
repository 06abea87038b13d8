_instruments = ("aiohttp-retry >= 2.8, < 3",)
