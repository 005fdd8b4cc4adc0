"""Data sets for qatrun runs."""
