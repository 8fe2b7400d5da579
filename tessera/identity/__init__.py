"""Identity: matching records of one person, stable customer ids, golden records."""
