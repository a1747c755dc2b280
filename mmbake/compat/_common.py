"""What the compatibility fixes share."""
from typing import Any, Callable

# Marks a function installed by a fix, so that applying twice is harmless.
PATCH_MARK = '_mmbake_compat_patch'


def mark(function: Callable) -> Callable:
    """Mark ``function`` as installed by a fix and return it."""
    setattr(function, PATCH_MARK, True)
    return function


def install(owner: Any, name: str, wrap: Callable[[Callable],
                                                  Callable]) -> bool:
    """Replace ``owner.name`` by ``wrap(owner.name)``, once.

    Args:
        owner (Any): A module or class.
        name (str): The attribute to wrap.
        wrap (Callable): Takes the original, returns its replacement.

    Returns:
        bool: True if the replacement is installed (now or before); False
        if ``owner`` has no such attribute (another mmengine version).
    """
    original = getattr(owner, name, None)
    if original is None:
        return False
    if not getattr(original, PATCH_MARK, False):
        setattr(owner, name, mark(wrap(original)))
    return True
