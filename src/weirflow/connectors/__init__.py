"""weirflow.connectors: see DESIGN.md, Layers."""
