"""weirflow.eventlog: see DESIGN.md, Layers."""
