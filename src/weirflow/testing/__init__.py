"""weirflow.testing: see DESIGN.md, Layers."""
