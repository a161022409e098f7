"""weirflow.api: see DESIGN.md, Layers."""
