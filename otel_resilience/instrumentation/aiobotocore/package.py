_instruments = ("aiobotocore >= 2.13, < 4",)
