"""What is done to the loaded tracks before training: balancing, splitting, weights, tables
(helper_functions.py is the front door)."""
