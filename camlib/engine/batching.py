"""Running graphs on batches in pieces: the head on chunks, later stages on joined groups."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

import torch


def join_chunks(parts: Sequence[Sequence]) -> list:
    """The outputs of a graph (the head) run on consecutive chunks of a batch, joined: tensors with
    a batch dimension are concatenated (contiguous), anything else is taken from the first chunk."""
    if len(parts) == 1:
        return [v.contiguous() if isinstance(v, torch.Tensor) else v for v in parts[0]]
    return [torch.cat([v.contiguous() for v in values]) if isinstance(values[0], torch.Tensor) and values[0].dim() > 0
            else values[0] for values in zip(*parts)]


def run_in_groups(stages: Sequence[tuple[Callable, int]], chunks: Iterable[tuple[torch.Tensor, tuple]]
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Graphs run one after the other on a stream of chunks, each graph on the joined outputs of
    at least ``size`` images (the last group of each may be smaller).

    ``chunks``: (keys, outputs of the first graph) for a few images at a time; ``stages``:
    (graph, size) for each later graph, which takes the outputs of the one before. Yields
    (keys, output of the last graph) per group, the keys of its images in order.
    """
    pending: list[list] = [[] for _ in stages]

    def advance(final: bool):
        for n, (graph, size) in enumerate(stages):
            if pending[n] and (final or sum(k.numel() for k, _ in pending[n]) >= size):
                group, pending[n] = pending[n], []
                keys = torch.cat([k for k, _ in group])
                inputs = join_chunks([v for _, v in group])
                del group  # the chunks, now joined: not kept alive through the graph's run
                out = graph(*inputs)
                del inputs
                if n + 1 < len(stages):
                    pending[n + 1].append((keys, out if isinstance(out, tuple) else (out,)))
                else:
                    yield keys, out

    for keys, outputs in chunks:
        pending[0].append((keys, outputs))
        yield from advance(False)
    yield from advance(True)
