"""Version of the mmbake package."""

__version__ = '0.2.0'


def parse_version_info(version_str: str) -> tuple:
    """Split a version string such as ``'0.1.0'`` into a tuple of ints.

    Args:
        version_str (str): The version string.

    Returns:
        tuple: The numeric parts, e.g. ``(0, 1, 0)``.
    """
    return tuple(
        int(part) for part in version_str.split('.') if part.isdigit())


version_info = parse_version_info(__version__)
