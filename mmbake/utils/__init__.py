"""Helpers shared by mmbake's command-line tools."""
from .cli import (BUILD_ERRORS, DEBUG_ENV, debug_enabled, exit_with_error,
                  leave_distributed, say, set_work_dir)

__all__ = [
    'BUILD_ERRORS', 'DEBUG_ENV', 'debug_enabled', 'exit_with_error',
    'leave_distributed', 'say', 'set_work_dir'
]
