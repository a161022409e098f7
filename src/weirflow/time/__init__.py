"""weirflow.time: see DESIGN.md, Layers."""
