"""weirflow.checkpoint: see DESIGN.md, Layers."""
