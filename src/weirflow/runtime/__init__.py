"""weirflow.runtime: see DESIGN.md, Layers."""
