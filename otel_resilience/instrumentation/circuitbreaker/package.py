_instruments = ("circuitbreaker >= 2.0, < 3",)
