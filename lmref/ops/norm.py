"""norm ops (being written)."""
__all__ = []
