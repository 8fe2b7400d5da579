"""The demo's sample-data generator. Not part of the product core: no stage imports it."""
