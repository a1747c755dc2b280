"""torch.distributed without GPU for mmengine 0.10.7's runner, whose
``_init_dist_pytorch`` (mmengine/dist/utils.py) calls
``torch.cuda.set_device`` and whose ``wrap_model`` gives DDP
``device_ids=[LOCAL_RANK]``, refused for a CPU model. The runner starts no
process group where one exists, and ``model_wrapper_cfg``'s
``device_ids=None`` wins: a launcher that calls :func:`gloo_without_gpu`
first needs no change to mmengine (``tools/mmbake_tools/cli.py``)."""
import logging
import os
from typing import Optional


def cpu_only() -> bool:
    """Whether no CUDA, NPU, MLU or MUSA device is present."""
    import mmengine.device as device

    checks = ('is_cuda_available', 'is_npu_available', 'is_mlu_available',
              'is_musa_available')
    return not any(
        getattr(device, name)() for name in checks if hasattr(device, name))


def init_gloo_process_group(asked_backend: Optional[str] = None,
                            **kwargs) -> None:
    """Start gloo from torchrun's environment; ``asked_backend`` (the
    config's, e.g. nccl) is logged when it differs; ``kwargs`` go to
    ``init_process_group``."""
    import torch.distributed as dist
    from mmengine.logging import print_log

    if asked_backend not in (None, 'gloo'):
        print_log(
            f'mmbake: no GPU: torch.distributed starts with backend "gloo" '
            f'instead of "{asked_backend}"',
            logger='current',
            level=logging.INFO)
    dist.init_process_group(
        backend='gloo',
        rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']),
        **kwargs)


def cpu_model_wrapper_cfg(model_wrapper_cfg: Optional[dict],
                          find_unused_parameters: bool = False) -> dict:
    """``model_wrapper_cfg`` (mmengine's default DDP settings where None)
    with ``device_ids=None``, as DDP of a model on the CPU needs."""
    if model_wrapper_cfg is None:
        model_wrapper_cfg = dict(
            type='MMDistributedDataParallel',
            broadcast_buffers=False,
            find_unused_parameters=find_unused_parameters)
    return dict(model_wrapper_cfg, device_ids=None)


def gloo_without_gpu(cfg) -> None:
    """Prepare ``cfg`` (a runner's config) for ``launcher='pytorch'`` on a
    machine without GPU, unless a process group exists: start gloo and set
    ``cfg.model_wrapper_cfg`` to :func:`cpu_model_wrapper_cfg`'s, saying
    so in a log line."""
    import torch.distributed as dist
    from mmengine.logging import print_log

    if cfg.launcher != 'pytorch' or not cpu_only() or dist.is_initialized():
        return
    dist_cfg = (cfg.get('env_cfg', None) or {}).get('dist_cfg', None)
    init_gloo_process_group((dist_cfg or {}).get('backend'))
    cfg.model_wrapper_cfg = cpu_model_wrapper_cfg(
        cfg.get('model_wrapper_cfg', None),
        cfg.get('find_unused_parameters', False))
    print_log(
        'mmbake: no GPU: model_wrapper_cfg.device_ids=None (DDP of a CPU '
        'model)',
        logger='current',
        level=logging.INFO)
