"""Small helpers shared by the package, the tools and the studies."""
from .atomic_write import replace_atomically, temporary_path, write_atomically
from .checkpoint import (HAS_ALLOWLIST, PLAIN_TAG, checkpoint_from_plain,
                         checkpoint_globals, checkpoint_is_truncated,
                         checkpoint_safe_globals, checkpoint_to_plain,
                         history_buffer_getattr, load_checkpoint_weights_only)
from .cpu_distributed import (cpu_model_wrapper_cfg, cpu_only,
                              init_gloo_process_group)
from .release import save_release

__all__ = [
    'write_atomically', 'temporary_path', 'replace_atomically', 'save_release',
    'checkpoint_globals', 'checkpoint_is_truncated', 'checkpoint_safe_globals',
    'history_buffer_getattr', 'load_checkpoint_weights_only', 'HAS_ALLOWLIST',
    'PLAIN_TAG', 'checkpoint_to_plain', 'checkpoint_from_plain', 'cpu_only',
    'init_gloo_process_group', 'cpu_model_wrapper_cfg'
]
