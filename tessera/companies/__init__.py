"""Companies (B2B): golden companies, their users, potential companies."""
