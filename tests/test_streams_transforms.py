import numpy as np
import pytest
import torch
from stage_recorder import ArraySource

from scenimefy.data.streams import Stream, StreamPosition
from scenimefy.data.transforms import random_crop_flip


def _arrays(n=10):
    return {"image": np.arange(n, dtype=np.uint8)[:, None, None, None].repeat(4, 1).repeat(4, 2).repeat(3, 3)}


def _ids(batch):
    return batch["image"][:, 0, 0, 0].tolist()


def test_array_source_passes_are_shuffled_per_pass_and_cover_the_shard():
    src = ArraySource(_arrays(10), batch_size=2, seed=0, rank=1, world_size=2)
    first = sum((_ids(b) for b in src.passes(0)), [])
    second = sum((_ids(b) for b in src.passes(1)), [])
    # rank 1's shard is the odd rows; 5 rows at batch 2 drop one row per pass
    assert len(first) == len(second) == 4
    assert set(first) <= {1, 3, 5, 7, 9} and set(second) <= {1, 3, 5, 7, 9}
    assert first != second  # reshuffled per pass (seeded)
    assert first == sum((_ids(b) for b in src.passes(0)), [])  # deterministic


def test_stream_cycles_and_resumes_at_its_position():
    src = ArraySource(_arrays(6), batch_size=2, seed=3)
    stream = Stream(src, "photos")
    seen = [_ids(stream.next()) for _ in range(7)]  # 3 batches per pass
    assert stream.position == StreamPosition(2, 1)
    resumed = Stream(src, "photos", StreamPosition(1, 2))
    assert _ids(resumed.next()) == seen[5]
    assert _ids(resumed.next()) == seen[6]


def test_stream_with_too_few_rows_says_what_to_change():
    stream = Stream(ArraySource(_arrays(1), batch_size=2, seed=0), "anime")
    with pytest.raises(ValueError, match="'anime'.*batch_size_per_worker"):
        stream.next()


def test_pairs_share_crop_and_flip():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (3, 12, 12, 3), dtype=np.uint8)
    xa, xb = random_crop_flip([a, a.copy()], crop_size=8, flip=True, generator=torch.Generator().manual_seed(1))
    assert xa.shape == (3, 3, 8, 8)
    assert torch.equal(xa, xb)


def test_unpaired_crop_values_and_flip():
    img = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    img[0, :, 0] = 255  # left column white
    flipped = None
    for seed in range(20):
        (out,) = random_crop_flip([img], crop_size=4, flip=True, generator=torch.Generator().manual_seed(seed))
        assert out.min() == -1 and out.max() == 1
        if out[0, 0, 0, 3] == 1:  # the white column moved to the right
            flipped = True
    assert flipped
    (no_flip,) = random_crop_flip([img], crop_size=4, flip=False, generator=torch.Generator().manual_seed(0))
    assert no_flip[0, 0, 0, 0] == 1


def test_crop_larger_than_image_is_an_error():
    with pytest.raises(ValueError, match="crop_size 8"):
        random_crop_flip([np.zeros((1, 4, 4, 3), np.uint8)], crop_size=8, flip=False, generator=torch.Generator())
