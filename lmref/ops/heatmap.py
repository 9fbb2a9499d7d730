"""heatmap ops (being written)."""
__all__ = []
