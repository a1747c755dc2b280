"""Temperature scaling: fit one temperature, fold it into the final layer.

Dividing a classifier's logits by a temperature ``T > 0`` changes its
probabilities, not its predicted classes (Guo et al., *On Calibration of
Modern Neural Networks*, ICML 2017). For logits that are one linear layer's
output, ``z / T = (W / T) x + b / T``: the temperature is folded into the
layer's weight and bias, and the model keeps its ``state_dict`` keys and
shapes.
"""
import torch
import torch.nn as nn

# Bisection on the derivative, in beta = 1 / T, stops when the bracket is
# this narrow relative to its upper end, or after this many halvings.
_RELATIVE_TOLERANCE = 1e-12
_MAX_STEPS = 200
# The bracket's upper end doubles at most this often (beta up to 2^64).
_MAX_DOUBLINGS = 64


def _nll_slope(logits: torch.Tensor, labels: torch.Tensor,
               beta: float) -> float:
    """d/d(beta) of the mean NLL of ``softmax(beta * logits)``.

    It is ``mean_i(E_p[z_i] - z_i[y_i])``, non-decreasing in ``beta`` (the
    second derivative is the variance of ``z_i`` under ``p``).
    """
    prob = torch.softmax(beta * logits, dim=1)
    expected = (prob * logits).sum(dim=1)
    return float((expected - logits.gather(1, labels[:, None])[:, 0]).mean())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature that minimises the mean NLL of ``softmax(z / T)``.

    The mean negative log-likelihood is convex in ``beta = 1 / T``, so its
    minimum is where its derivative changes sign; the derivative is
    bracketed and bisected in float64 to a relative 1e-12.

    Args:
        logits (torch.Tensor): Logits ``z``, shape ``(N, K)``.
        labels (torch.Tensor): Ground-truth classes, shape ``(N, )``.

    Returns:
        float: The fitted temperature ``T > 0``.

    Raises:
        ValueError: If the shapes or labels are invalid, a logit is not
            finite, or no finite positive temperature minimises the NLL
            (every image's top-1 class is right, so the NLL falls towards
            ``T = 0``; or the logits do no better than uniform scores).
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1] or \
            logits.shape[0] == 0 or logits.shape[1] < 2:
        raise ValueError(
            'logits must have shape (N, K) with N >= 1 and K >= 2, and '
            f'labels shape (N, ), but got {tuple(logits.shape)} and '
            f'{tuple(labels.shape)}')
    logits = logits.detach().cpu().to(torch.float64)
    labels = labels.detach().cpu().to(torch.int64)
    if not bool(torch.isfinite(logits).all()):
        raise ValueError('logits must be finite, but some are inf or NaN')
    if bool(((labels < 0) | (labels >= logits.shape[1])).any()):
        raise ValueError(f'labels must lie in [0, {logits.shape[1]}), but '
                         f'got values from {int(labels.min())} to '
                         f'{int(labels.max())}')
    if _nll_slope(logits, labels, 0.0) >= 0:
        raise ValueError('no positive temperature fits: on these images the '
                         'logits do no better than uniform scores')
    true_logit = logits.gather(1, labels[:, None])[:, 0]
    if bool((logits.max(dim=1).values <= true_logit).all()):
        raise ValueError(
            'no finite temperature fits: every image is classified '
            'correctly, so the NLL keeps falling as T goes to 0; fit on '
            'more (or harder) held-out images')
    low, high = 0.0, 1.0
    for _ in range(_MAX_DOUBLINGS):
        if _nll_slope(logits, labels, high) >= 0:
            break
        low, high = high, 2.0 * high
    else:
        raise ValueError('no finite temperature fits: the NLL is still '
                         f'falling at T = {1.0 / high:.3g}')
    for _ in range(_MAX_STEPS):
        if high - low <= _RELATIVE_TOLERANCE * high:
            break
        middle = 0.5 * (low + high)
        if _nll_slope(logits, labels, middle) < 0:
            low = middle
        else:
            high = middle
    return 2.0 / (low + high)


def final_linear(layer: nn.Module) -> nn.Linear:
    """The one ``nn.Linear`` of a head's final layer.

    Args:
        layer (nn.Module): An ``nn.Linear``, or a module holding exactly one
            (e.g. mmpretrain's ``LinearBlock``).

    Returns:
        nn.Linear: That layer.

    Raises:
        ValueError: If ``layer`` does not hold exactly one ``nn.Linear``.
    """
    linears = [m for m in layer.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        raise ValueError(
            'the final layer must hold exactly one nn.Linear to fold a '
            f'temperature into, but {type(layer).__name__} holds '
            f'{len(linears)}')
    return linears[0]


def fold_temperature(layer: nn.Module, temperature: float) -> nn.Linear:
    """Divide the weight and bias of :func:`final_linear` of ``layer`` by T.

    Args:
        layer (nn.Module): A head's final layer (see :func:`final_linear`).
        temperature (float): ``T > 0``, finite.

    Returns:
        nn.Linear: The linear layer that was changed, in place.

    Raises:
        ValueError: If ``temperature`` is not a finite number > 0, or
            ``layer`` does not hold exactly one ``nn.Linear``.
    """
    temperature = float(temperature)
    if not 0 < temperature < float('inf'):
        raise ValueError('temperature must be a finite number > 0, but got '
                         f'{temperature!r}')
    linear = final_linear(layer)
    with torch.no_grad():
        linear.weight.div_(temperature)
        if linear.bias is not None:
            linear.bias.div_(temperature)
    return linear
