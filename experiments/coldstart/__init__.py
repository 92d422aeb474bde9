"""Cold-start recommendation on MovieLens-100K (``python -m experiments.coldstart``)."""
