"""ipywidgets panels for the notebooks (nothing in the core imports them)."""
