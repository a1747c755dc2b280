"""What the compatibility fixes share."""

# Marks a function installed by a fix, so that applying twice is harmless.
PATCH_MARK = '_mmbake_compat_patch'
