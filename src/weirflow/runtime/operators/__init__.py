"""weirflow.runtime.operators: see DESIGN.md, Layers."""
