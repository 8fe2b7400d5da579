"""Product recommendations: declared home, built by its issue."""
