"""Marketing: the rule language, segments, scoring, stages and RFM."""
