"""weirflow.state: see DESIGN.md, Layers."""
