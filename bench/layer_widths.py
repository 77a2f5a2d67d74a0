"""How one 3x3 conv (+ BN + ReLU, fused oneDNN) of cifar_resnet56_v1 runs at other widths, batch 64, on this CPU.

    python bench/layer_widths.py

For each stage's spatial size (32x32, 16x16, 8x8) it times the layer alone at every (in, out) pair of candidate
widths with mxprune's latency table (measured fresh, not read from the cache) and prints milliseconds, rows = input
channels, columns = output channels. This is the evidence behind round_to 16 and behind the per-stage widths of
the accuracy table's l2_layerwise row. Last line: ratio <time at the stage-2 widths halved (16/16 at 16x16) / dense
(32/32)> against the MACs ratio 0.25.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools'))
import _bootstrap  # noqa: E402

from mxprune.latency import LatencyTable  # noqa: E402

STAGES = (((32, 32), (16, 8, 12, 24)), ((16, 16), (32, 16, 8, 24)), ((8, 8), (64, 48, 32, 16, 8)))


def main() -> None:
    print(_bootstrap.THREADS_NOTE)
    with tempfile.TemporaryDirectory() as d:
        table = LatencyTable(64, 'auto', repeats=9, path=os.path.join(d, 'table.json'))
        print(f'backend {table.backend}, batch 64, ms per call; rows: input channels, columns: output channels')
        for side, widths in STAGES:
            sig = ('conv', '(3, 3)', '(1, 1)', '(1, 1)', '(1, 1)', side, False)
            print(f'{side[0]}x{side[1]}   ' + ''.join(f'{w:>8}' for w in widths))
            for cin in widths:
                print(f'{cin:>8}  ' + ''.join(f'{table.get(sig, cin, cout):8.3f}' for cout in widths), flush=True)
        sig = ('conv', '(3, 3)', '(1, 1)', '(1, 1)', '(1, 1)', (16, 16), False)
        print(f'ratio {table.get(sig, 16, 16) / table.get(sig, 32, 32):.3f}')


if __name__ == '__main__':
    main()
