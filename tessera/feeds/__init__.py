"""Feeds: selecting a feed's rows, writing them in a format, delivering them."""
