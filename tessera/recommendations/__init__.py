"""Product recommendations: the five kinds of the contact card, buy again, and the
back-test of each against the best sellers (capability C6)."""
