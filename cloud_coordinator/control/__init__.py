"""Control streams: the long-lived connections agents open, and commands sent down them."""
