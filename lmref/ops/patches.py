"""patches ops (being written)."""
__all__ = []
