"""BFloat16OptimWrapper: bfloat16 autocast on the CPU, plain updates."""
import torch
from mmpretrain.registry import OPTIM_WRAPPERS
from mmpretrain.structures import DataSample

from mmbake.models import BAKEHead


def test_autocasts_bfloat16_on_cpu_and_trains_a_bake_head():
    head = BAKEHead(num_classes=4, in_channels=8, global_ensemble=False)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    wrapper = OPTIM_WRAPPERS.build(
        dict(type='BFloat16OptimWrapper', optimizer=optimizer))
    feats = (torch.randn(8, 8), )
    samples = [DataSample().set_gt_label(i // 2 % 4) for i in range(8)]
    before = head.fc.weight.detach().clone()
    with wrapper.optim_context(head):
        assert torch.get_autocast_dtype('cpu') == torch.bfloat16
        assert head(feats).dtype == torch.bfloat16
        losses = head.loss(feats, samples)
    assert head(feats).dtype == torch.float32  # only inside the context
    # The ensembling and its KL ran in float32.
    assert losses['loss_bake'].dtype == torch.float32
    assert torch.isfinite(losses['loss_bake']) and losses['loss_bake'] > 0
    wrapper.update_params(losses['loss_ce'] + losses['loss_bake'])
    assert not torch.equal(head.fc.weight, before)
    # Its state is OptimWrapper's: it round-trips for resume.
    state = wrapper.state_dict()
    assert set(state) == {'state', 'param_groups'}
    wrapper.load_state_dict(state)
