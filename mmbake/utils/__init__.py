"""Small helpers shared by the package, the tools and the studies."""
from .atomic_write import write_atomically

__all__ = ['write_atomically']
