"""weirflow.metrics: see DESIGN.md, Layers."""
