"""Initialization: starting parameters for every candidate model, in a constant number of passes."""
