"""weirflow.web: see DESIGN.md, Layers."""
