"""Reports: analyses an analyst reads (potential unsubscribes today; more to come)."""
