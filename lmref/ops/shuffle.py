"""shuffle ops (being written)."""
__all__ = []
