"""The engine layer: the warehouse connection, named SQL steps, the Engine seam and the dialect."""
