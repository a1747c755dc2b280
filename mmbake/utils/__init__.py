"""Small helpers shared by the package, the tools and the studies."""
from .atomic_write import write_atomically
from .release import save_release

__all__ = ['write_atomically', 'save_release']
