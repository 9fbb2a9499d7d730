"""resize ops (being written)."""
__all__ = []
