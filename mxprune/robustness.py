"""How pruning changed a model's behaviour under attack: FGSM and PGD (L-infinity) top-1 on a test slice.

Attacks work in pixel space ([0, 1] per channel, as the images are stored) and go through the same normalisation the
model sees, so epsilon means what papers mean by it (8/255 = 8 grey levels). PGD (Madry et al. 2018) starts at a
random point of the epsilon ball, takes `steps` signed-gradient steps of 2.5 * eps / steps and projects back onto the
ball and the valid pixel range after each. Both nets are attacked with the same images and the same random starts.
"""
from typing import Dict, Sequence

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from . import progress as progress_mod


def _normalize(x_pix: mx.nd.NDArray, mean: mx.nd.NDArray, std: mx.nd.NDArray) -> mx.nd.NDArray:
    return mx.nd.broadcast_div(mx.nd.broadcast_sub(x_pix, mean), std)


def _grad_sign(net, x_pix, y, mean, std, loss_fn):
    x_pix = x_pix.copy()
    x_pix.attach_grad()
    with autograd.record(train_mode=False):
        loss = loss_fn(net(_normalize(x_pix, mean, std)), y)
    loss.backward()
    return mx.nd.sign(x_pix.grad)


def attack(net, x_pix: mx.nd.NDArray, y: mx.nd.NDArray, eps: float, mean, std, *, steps: int = 0,
           rng: np.random.RandomState = None) -> mx.nd.NDArray:
    """An adversarial batch: FGSM when steps == 0, else PGD with `steps` steps (random start from `rng`)."""
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    if steps == 0:
        return mx.nd.clip(x_pix + eps * _grad_sign(net, x_pix, y, mean, std, loss_fn), 0.0, 1.0)
    alpha = 2.5 * eps / steps
    start = mx.nd.array(rng.uniform(-eps, eps, x_pix.shape), ctx=x_pix.context)
    adv = mx.nd.clip(x_pix + start, 0.0, 1.0)
    for _ in range(steps):
        adv = adv + alpha * _grad_sign(net, adv, y, mean, std, loss_fn)
        adv = mx.nd.clip(mx.nd.minimum(mx.nd.maximum(adv, x_pix - eps), x_pix + eps), 0.0, 1.0)
    return adv


def evaluate(nets: Dict[str, gluon.HybridBlock], images: np.ndarray, labels: np.ndarray, mean: Sequence[float],
             std: Sequence[float], eps_list: Sequence[float] = (2 / 255, 8 / 255), pgd_steps: int = 7,
             batch_size: int = 100, ctx: mx.Context = None, seed: int = 0, progress: bool = False) -> Dict[str, dict]:
    """Clean, FGSM and PGD top-1 of each net on uint8 NHWC `images` (`progress`: a bar of batches on stderr).

    Returns:
        {net name: {'clean': top1, 'fgsm': {eps: top1}, 'pgd': {eps: top1}}} with eps written as e.g. '8/255'.
    """
    ctx = ctx or mx.cpu()
    m = mx.nd.array(np.asarray(mean, np.float32).reshape(1, 3, 1, 1), ctx=ctx)
    s = mx.nd.array(np.asarray(std, np.float32).reshape(1, 3, 1, 1), ctx=ctx)
    out = {name: {'clean': 0.0, 'fgsm': {}, 'pgd': {}} for name in nets}
    n = len(labels)
    bar = progress_mod.bar(desc='FGSM/PGD attacks', total=len(nets) * -(-n // batch_size), unit=' batches',
                           enabled=progress)
    for name, net in nets.items():
        if hasattr(net, 'hybridize'):
            net.hybridize(static_alloc=True)
        hits = {'clean': 0, **{('fgsm', e): 0 for e in eps_list}, **{('pgd', e): 0 for e in eps_list}}
        rng = np.random.RandomState(seed)  # the same random starts for every net
        for b in range(0, n, batch_size):
            x = mx.nd.array(images[b:b + batch_size].transpose(0, 3, 1, 2).astype(np.float32) / 255.0, ctx=ctx)
            y = mx.nd.array(labels[b:b + batch_size], ctx=ctx)

            def correct(x_pix, net=net, y=y):
                pred = net(_normalize(x_pix, m, s)).argmax(axis=1)
                return int((pred == y).sum().asscalar())
            hits['clean'] += correct(x)
            for e in eps_list:
                hits[('fgsm', e)] += correct(attack(net, x, y, e, m, s))
                hits[('pgd', e)] += correct(attack(net, x, y, e, m, s, steps=pgd_steps, rng=rng))
            bar.update(1)
        out[name]['clean'] = hits['clean'] / n
        for e in eps_list:
            key = f'{round(e * 255)}/255'
            out[name]['fgsm'][key] = hits[('fgsm', e)] / n
            out[name]['pgd'][key] = hits[('pgd', e)] / n
    bar.close()
    return out


def table(result: Dict[str, dict]) -> str:
    names = list(result)
    eps = list(next(iter(result.values()))['fgsm'])
    rows = [('clean', *[f'{result[n]["clean"]:.4f}' for n in names])]
    for kind in ('fgsm', 'pgd'):
        rows += [(f'{kind.upper()} eps {e}', *[f'{result[n][kind][e]:.4f}' for n in names]) for e in eps]
    w = max(len(r[0]) for r in rows)
    head = f'{"top-1":{w}}  ' + '  '.join(f'{n:>8}' for n in names)
    return '\n'.join([head] + [f'{r[0]:{w}}  ' + '  '.join(f'{v:>8}' for v in r[1:]) for r in rows])
