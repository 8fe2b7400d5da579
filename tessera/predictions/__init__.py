"""Predictions (purchase, churn, lifetime value): declared home, built by its issue."""
