"""Serving: SavedModels in TF Serving's layout, their signatures and deployment files."""
