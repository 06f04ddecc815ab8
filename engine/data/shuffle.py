"""Which stored example a training position reads: a seeded split and a global shuffle per epoch,
computed per index (Grain's index_shuffle, a keyed bijection), so no permutation of the corpus is
ever held in memory and position g of any epoch costs the same.

    order = ExampleOrder(total=10_000_000, eval_examples=2048, seed=0)
    order.eval_example(i)     # storage index of validation example i (i < eval_examples)
    order.train_example(g)    # storage index of global training example g (epoch g // train)

The split is fixed by the seed: validation takes the first `eval_examples` positions of one keyed
permutation of all examples, training the rest. Epoch e reads the training examples in the order
of its own keyed permutation.
"""

from __future__ import annotations

import numpy as np

from engine.data.base import EPOCH_STREAM, SPLIT_STREAM

ROUNDS = 4  # Grain's own choice for its shuffles


def shuffle_key(seed: int, stream: int, index: int) -> int:
    """A 31-bit key for one (seed, stream, index) cell (index_shuffle takes a 32-bit seed)."""
    return int(np.random.default_rng([seed, stream, index]).integers(2**31))


class ExampleOrder:
    def __init__(self, total: int, eval_examples: int, seed: int) -> None:
        if eval_examples >= total:
            raise ValueError(f"{eval_examples} validation examples leave none of {total} for training")
        self.total = total
        self.eval_examples = eval_examples
        self.train_examples = total - eval_examples
        self.seed = seed
        from grain.experimental import index_shuffle  # here: importing grain imports JAX (seconds)

        self._index_shuffle = index_shuffle
        self._split_key = shuffle_key(seed, SPLIT_STREAM, 0)
        self._epoch_keys: dict[int, int] = {}

    def _split(self, position: int) -> int:
        return self._index_shuffle(index=position, max_index=self.total - 1, seed=self._split_key, rounds=ROUNDS)

    def eval_example(self, index: int) -> int:
        return self._split(index)

    def train_example(self, position: int) -> int:
        epoch, offset = divmod(position, self.train_examples)
        if epoch not in self._epoch_keys:
            self._epoch_keys[epoch] = shuffle_key(self.seed, EPOCH_STREAM, epoch)
        shuffled = self._index_shuffle(index=offset, max_index=self.train_examples - 1,
                                 seed=self._epoch_keys[epoch], rounds=ROUNDS)
        return self._split(self.eval_examples + shuffled)


def process_share(step: int, examples_per_step: int, index: int, count: int) -> range:
    """The positions in the global training order that process `index` of `count` reads at `step`:
    its contiguous share of the step's batch (the processes' shares are disjoint and cover it)."""
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    share = examples_per_step // count
    first = step * examples_per_step + index * share
    return range(first, first + share)
