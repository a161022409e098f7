"""weirflow.graph: see DESIGN.md, Layers."""
