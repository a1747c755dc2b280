"""ClassAwareBatchSampler under real torch.distributed (gloo) processes."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest

from tests.dist_utils import free_port

WORKER = osp.join(
    osp.dirname(osp.abspath(__file__)), 'dist_class_aware_worker.py')
TIMEOUT_S = 180


def run_workers(out_dir: str) -> dict:
    """Start 3 ranks (worlds of 3, then 2); fail, never hang, on timeout."""
    port_3, port_2 = str(free_port()), str(free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER,
             str(rank), port_3, port_2, out_dir],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, OMP_NUM_THREADS='1')) for rank in range(3)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT_S)[0].decode())
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        pytest.fail(f'gloo workers did not finish within {TIMEOUT_S} s '
                    '(a rank waiting in all_gather?)')
    for rank, (proc, out) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f'rank {rank} failed:\n{out}'
    reports = {}
    for world_size in (3, 2):
        reports[world_size] = []
        for rank in range(world_size):
            path = osp.join(out_dir, f'world{world_size}_rank{rank}.json')
            with open(path) as f:
                reports[world_size].append(json.load(f))
    return reports


def check_world(world_size: int, reports: list) -> None:
    """Every guarantee, over the reports of all ranks of one world."""
    labels = np.array(reports[0]['labels'])
    num_samples = -(-len(labels) // world_size)
    for name in ('default-images', 'default-anchors', 'no-round-up-images',
                 'no-round-up-anchors', 'infinite'):
        cases = [report[name] for report in reports]
        per_batch = 2 if name.endswith('anchors') else 6  # anchors: 6 // 3
        expected_len = -(-num_samples // per_batch)
        # Same seed, same length and same number of batches everywhere.
        assert {case['seed'] for case in cases} == {cases[0]['seed']}
        assert {case['len'] for case in cases} == {expected_len}, name
        assert {case['num_gathers']
                for case in cases} == {len(cases[0]['batches'])}
        all_anchors, all_wrapped = [], []
        for case in cases:
            groups = np.array(case['batches']).reshape(-1, 3)
            assert (labels[groups] == labels[groups[:, :1]]).all(), name
            anchors = groups[:, 0].tolist()
            wrapped = case['wrapped']
            if name == 'infinite':
                assert len(case['batches']) == 2 * expected_len + 1
                assert anchors == wrapped[:len(anchors)]
                continue
            assert len(case['batches']) == case['len']
            # Anchors follow the wrapped order, restarted if it ran out.
            cycled = (wrapped * (len(anchors) // len(wrapped) + 1))
            assert anchors == cycled[:len(anchors)], name
            all_anchors += anchors[:len(wrapped)]
            all_wrapped += wrapped
        if name.endswith('anchors'):
            # Every index of the wrapped samplers is an anchor, over ranks.
            assert sorted(all_anchors) == sorted(all_wrapped)
            assert set(all_anchors) == set(range(len(labels)))


@pytest.mark.dist
def test_gloo_ranks_agree_with_2_and_3_processes(tmp_path):
    reports = run_workers(str(tmp_path))
    for world_size in (3, 2):
        check_world(world_size, reports[world_size])
