"""The cluttered-sequence generator against the authors' code (PROTOCOL.md), a per-image reference loop and
hand-made geometry; the disk cache; the `rstn data` command."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest

import rstn.data as data_module
from rstn.cli import main as cli_main
from rstn.data import (SPLITS, SequenceConfig, SplitDraws, cache_path, decode_images, draw_pool, draw_split,
                       encode_images, generate_sequences, load_sequences, read_cache, render, seed_streams)

CLEAN = dict(n_clutter=0)  # digits only, so every box holds exactly its MNIST digit


def small(config: SequenceConfig, **changes) -> SequenceConfig:
    return dataclasses.replace(config, **changes)


def test_shapes_dtypes_ranges(small_sequences: dict, small_config: SequenceConfig) -> None:
    for name in SPLITS:
        split = small_sequences[name]
        n = small_config.split_size(name)
        assert split.images.shape == (n, 100, 100) and split.images.dtype == np.float32
        assert split.labels.shape == (n, 3) and split.labels.dtype == np.int64
        assert split.boxes.shape == (n, 3, 4) and split.boxes.dtype == np.float32
        assert split.digit_index.shape == (n, 3) and split.digit_index.dtype == np.int64
        assert split.images.min() == 0.0 and split.images.max() <= 1.0
        assert split.labels.min() >= 0 and split.labels.max() <= 9
        scaled = split.images * 256
        assert np.array_equal(scaled, np.rint(scaled))  # sums of k/256 stay on the grid
    assert (small_sequences["train"].images == 1.0).any()  # clutter on a stroke saturates: the clip acts


def test_deterministic_per_seed(small_sequences: dict, small_config: SequenceConfig) -> None:
    again = generate_sequences(small_config, seed=0)
    other = generate_sequences(small_config, seed=1)
    for name in SPLITS:
        assert np.array_equal(again[name].images, small_sequences[name].images)
        assert np.array_equal(again[name].labels, small_sequences[name].labels)
        assert np.array_equal(again[name].boxes, small_sequences[name].boxes)
        assert not np.array_equal(other[name].images, small_sequences[name].images)
        assert not np.array_equal(other[name].labels, small_sequences[name].labels)


def test_split_sizes_do_not_change_other_splits(small_sequences: dict, small_config: SequenceConfig) -> None:
    bigger = generate_sequences(small(small_config, n_train=small_config.n_train + 7), seed=0)
    assert len(bigger["train"]) == small_config.n_train + 7
    assert np.array_equal(bigger["test"].images, small_sequences["test"].images)


@pytest.mark.parametrize("name", SPLITS)
def test_labels_match_the_digits_placed(mnist: dict, small_config: SequenceConfig, name: str) -> None:
    """Clutter-free: inside each box is exactly the MNIST digit of the split's own digits with that label."""
    split = generate_sequences(small(small_config, **CLEAN), seed=3)[name]
    digits, labels = mnist[name]
    assert split.digit_index.max() < len(digits)
    outside = split.images.copy()
    for n in range(len(split)):
        for i, (x0, y0, x1, y1) in enumerate(split.boxes[n].astype(int)):
            source = split.digit_index[n, i]
            np.testing.assert_array_equal(split.images[n, y0:y1, x0:x1], digits[source])
            assert split.labels[n, i] == labels[source]
            outside[n, y0:y1, x0:x1] = 0.0
    assert not outside.any()  # nothing else on the canvas


def test_splits_draw_only_from_their_own_digits(mnist: dict, small_config: SequenceConfig) -> None:
    """A valid/test box never holds the train digit of the same index (as it would if splits mixed)."""
    splits = generate_sequences(small(small_config, **CLEAN), seed=4)
    for name in ("valid", "test"):
        split = splits[name]
        x0, y0 = split.boxes[0, 0, :2].astype(int)
        crop = split.images[0, y0:y0 + 28, x0:x0 + 28]
        assert np.array_equal(crop, mnist[name][0][split.digit_index[0, 0]])
        assert not np.array_equal(crop, mnist["train"][0][split.digit_index[0, 0]])


def test_digits_abut_and_stay_inside(small_sequences: dict) -> None:
    for split in small_sequences.values():
        b = split.boxes
        np.testing.assert_array_equal(b[:, 1:, 0], b[:, :-1, 2])  # x_min of digit i+1 = x_max of digit i
        np.testing.assert_array_equal(b[..., 2] - b[..., 0], 28)
        np.testing.assert_array_equal(b[..., 3] - b[..., 1], 28)
        assert b[..., :2].min() >= 0 and b[..., 2:].max() <= 100
        assert b[:, 0, 0].min() >= 0 and b[:, 0, 0].max() <= 15  # x = 8 + U{-8..7}
        assert b[..., 1].max() <= 72


def test_draw_ranges_are_the_codes() -> None:
    """Every drawn quantity covers exactly the range in the authors' code (PROTOCOL.md)."""
    rng = seed_streams(0)
    draws = draw_split(SequenceConfig(), 20_000, 50_000, rng["train"])
    assert set(np.unique(draws.x_offset)) == set(range(0, 16))
    assert (draws.x_offset == draws.x_offset[:, :1]).all()  # one offset per image: the digits abut
    assert set(np.unique(draws.y0)) == set(range(0, 100))
    assert set(np.unique(draws.slope)) == set(range(-14, 14))
    assert draws.clutter_index.shape == (20_000, 8)
    assert set(np.unique(draws.clutter_x)) == set(range(0, 91)) == set(np.unique(draws.clutter_y))
    pool = draw_pool(SequenceConfig(), 60_000, rng["pool"])
    assert len(pool.source) == 100_000 and pool.source.max() < 60_000
    assert set(np.unique(pool.x)) == set(range(0, 19)) == set(np.unique(pool.y))


def test_paper_variants() -> None:
    rng = seed_streams(0)
    paper = small(SequenceConfig(), x_placement="random", slope_range=(-28, 28))
    draws = draw_split(paper, 20_000, 50_000, rng["train"])
    assert set(np.unique(draws.slope)) == set(range(-28, 29))
    x, _ = data_module.digit_positions(paper, draws)
    assert (np.diff(x, axis=1) >= 28).all() and x.min() == 0 and (x + 28).max() == 100  # no overlap, inside
    assert (np.diff(x, axis=1) > 28).any()  # gaps do occur
    with pytest.raises(ValueError):
        SequenceConfig(x_placement="diagonal")


def test_vectorised_equals_reference_loop(reference, small_config: SequenceConfig) -> None:
    """The same draws through the per-image loop that follows the authors' code give identical output."""
    variant = small(small_config, n_train=60, n_valid=20, n_test=20, x_placement="random",
                    slope_range=(-28, 28), clutter_sources=("train", "valid", "train"), n_clutter=20)
    for config in (small_config, variant):
        fast, slow = generate_sequences(config, seed=5), reference.reference_generate(config, seed=5)
        for name in SPLITS:
            np.testing.assert_array_equal(fast[name].images, slow[name].images)
            np.testing.assert_array_equal(fast[name].boxes, slow[name].boxes)
            np.testing.assert_array_equal(fast[name].labels, slow[name].labels)


def hand_draws(clutter_xy: list[tuple[int, int]], clutter_index: list[int]) -> SplitDraws:
    """One image: digit 0 at x = 0..27 (the others too), y0 = 0, slope 0, and the given patches."""
    return SplitDraws(digit_index=np.zeros((1, 3), np.int64), x_offset=np.zeros((1, 3), np.int64),
                      y0=np.zeros(1, np.int64), slope=np.zeros(1, np.int64),
                      clutter_index=np.array([clutter_index]),
                      clutter_x=np.array([[x for x, _ in clutter_xy]]),
                      clutter_y=np.array([[y for _, y in clutter_xy]]))


def test_later_patch_overwrites_earlier_and_clip() -> None:
    config = SequenceConfig(n_clutter=2)
    blank = np.zeros((1, 28, 28), np.float32)
    pool = np.stack([np.full((9, 9), 0.25, np.float32), np.full((9, 9), 0.5, np.float32)])
    # patch 0 (0.25) at (40, 40), then patch 1 (0.5) at (44, 44): the overlap shows 0.5
    image = render(config, blank, pool, hand_draws([(40, 40), (44, 44)], [0, 1]))[0]
    assert image[41, 41] == 0.25 and image[45, 45] == 0.5 and image[52, 52] == 0.5
    assert image[41, 50] == 0.0
    # the other order: the overlap shows 0.25
    image = render(config, blank, pool, hand_draws([(44, 44), (40, 40)], [1, 0]))[0]
    assert image[45, 45] == 0.25 and image[52, 52] == 0.5
    # clutter is added to the digits, then clipped at 1
    ink = np.full((1, 28, 28), 0.75, np.float32)
    image = render(config, ink, pool, hand_draws([(10, 10), (60, 60)], [0, 1]))[0]
    assert image[12, 12] == 1.0 and image[5, 5] == 0.75 and image[62, 62] == 0.5 and image[50, 5] == 0.0


def test_clutter_count(small_config: SequenceConfig) -> None:
    """With blank digits and all-ones patches, the ink is exactly the union of the 8 drawn 9x9 windows."""
    config = small(small_config, n_clutter=8)
    draws = draw_split(config, 200, 10, seed_streams(0)["train"])
    images = render(config, np.zeros((10, 28, 28), np.float32), np.ones((5, 9, 9), np.float32),
                    dataclasses.replace(draws, clutter_index=draws.clutter_index % 5))
    for n in range(200):
        expected = np.zeros((100, 100), bool)
        for x, y in zip(draws.clutter_x[n], draws.clutter_y[n]):
            expected[y:y + 9, x:x + 9] = True
        np.testing.assert_array_equal(images[n] > 0, expected)
    no_clutter = render(small(config, n_clutter=0), np.zeros((10, 28, 28), np.float32), np.ones((5, 9, 9)),
                        draw_split(small(config, n_clutter=0), 20, 10, seed_streams(0)["train"]))
    assert not no_clutter.any()


def test_pool_cuts_from_train_and_valid_only(mnist: dict, small_config: SequenceConfig) -> None:
    rng = seed_streams(0)["pool"]
    sources = np.concatenate([mnist["train"][0], mnist["valid"][0]])
    draws = draw_pool(small(small_config, clutter_pool_size=500), len(sources), rng)
    pool = data_module.build_pool(small_config, sources, draws)
    for p in range(0, 500, 50):
        s, x, y = draws.source[p], draws.x[p], draws.y[p]
        np.testing.assert_array_equal(pool[p], sources[s, y:y + 9, x:x + 9])


def test_encoding_is_lossless() -> None:
    levels = np.array([0, 1, 128, 255, 256], np.float32) / 256
    images = np.resize(levels, (3, 100, 100)).astype(np.float32)
    encoded = encode_images(images)
    assert encoded[0].dtype == np.uint8 and encoded[1].dtype == np.uint8
    np.testing.assert_array_equal(decode_images(*encoded), images)
    assert (decode_images(*encoded) == 1.0).sum() == (images == 1.0).sum() > 0
    with pytest.raises(ValueError, match="k/256"):
        encode_images(np.full((1, 100, 100), 0.3, np.float32))


def test_cache_hit_gives_identical_arrays(tmp_path: Path, small_config: SequenceConfig, small_sequences: dict,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_sequences(small_config, seed=0, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [cache_path(small_config, 0, tmp_path).name]
    monkeypatch.setattr(data_module, "generate_sequences", lambda *a, **k: pytest.fail("cache not used"))
    second = load_sequences(small_config, seed=0, cache_dir=tmp_path)
    for name in SPLITS:
        for field in ("images", "labels", "boxes", "digit_index"):
            fresh = getattr(small_sequences[name], field)
            np.testing.assert_array_equal(getattr(first[name], field), fresh)
            np.testing.assert_array_equal(getattr(second[name], field), fresh)
            assert getattr(second[name], field).dtype == fresh.dtype


def test_cache_key_changes_with_config_seed_and_version(small_config: SequenceConfig,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    base = cache_path(small_config, 0, "c")
    assert cache_path(small_config, 1, "c") != base
    assert cache_path(small(small_config, n_clutter=7), 0, "c") != base
    assert cache_path(small(small_config, slope_range=(-28, 28)), 0, "c") != base
    assert cache_path(SequenceConfig(**dataclasses.asdict(small_config)), 0, "c") == base
    monkeypatch.setattr(data_module, "GENERATOR_VERSION", data_module.GENERATOR_VERSION + 1)
    assert cache_path(small_config, 0, "c") != base


def test_stale_cache_is_never_reused(tmp_path: Path, small_config: SequenceConfig) -> None:
    """A file written for another config, found under this config's name, is detected and regenerated."""
    other = small(small_config, n_clutter=0)
    load_sequences(other, seed=0, cache_dir=tmp_path)
    cache_path(other, 0, tmp_path).rename(cache_path(small_config, 0, tmp_path))
    with pytest.raises(data_module.CacheError, match="written for"):
        read_cache(cache_path(small_config, 0, tmp_path), small_config, 0)
    with pytest.warns(UserWarning, match="regenerating"):
        loaded = load_sequences(small_config, seed=0, cache_dir=tmp_path)
    fresh = generate_sequences(small_config, seed=0)
    np.testing.assert_array_equal(loaded["train"].images, fresh["train"].images)
    read_cache(cache_path(small_config, 0, tmp_path), small_config, 0)  # now the right file


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_cache_is_regenerated(tmp_path: Path, small_config: SequenceConfig, damage: str) -> None:
    path = cache_path(small_config, 2, tmp_path)
    load_sequences(small_config, seed=2, cache_dir=tmp_path)
    good = path.read_bytes()
    path.write_bytes(b"garbage" if damage == "garbage" else good[: len(good) // 2])
    with pytest.warns(UserWarning, match="unreadable"):
        loaded = load_sequences(small_config, seed=2, cache_dir=tmp_path)
    assert len(loaded["test"]) == small_config.n_test
    assert path.read_bytes() != b"garbage" and len(path.read_bytes()) == len(good)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_sequences(small_config, seed=2, cache_dir=tmp_path)  # the rewritten file reads cleanly


def test_a_broken_deflate_stream_in_the_cache_is_regenerated(tmp_path: Path, small_config: SequenceConfig,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Damage inside a compressed member can surface as zlib.error rather than a bad CRC."""
    import zlib

    load_sequences(small_config, seed=2, cache_dir=tmp_path)
    decode = data_module.decode_images
    calls = []

    def broken_once(*args):
        calls.append(1)
        if len(calls) == 1:
            raise zlib.error("Error -3 while decompressing data: invalid distance too far back")
        return decode(*args)

    monkeypatch.setattr(data_module, "decode_images", broken_once)
    with pytest.warns(UserWarning, match="unreadable"):
        loaded = load_sequences(small_config, seed=2, cache_dir=tmp_path)
    assert len(loaded["test"]) == small_config.n_test


def test_failed_cache_write_leaves_no_file(tmp_path: Path, small_config: SequenceConfig,
                                           small_sequences: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(file, arrays):
        file.write(b"PK half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(data_module, "write_npz", broken)
    with pytest.raises(OSError, match="disk full"):
        data_module.save_cache(tmp_path / "x.npz", small_sequences, small_config, 0)
    assert list(tmp_path.iterdir()) == []


def test_cli_data_writes_cache_and_png(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    png = tmp_path / "grid.png"
    args = ["data", "--n-train", "12", "--n-valid", "4", "--n-test", "4", "--seed", "7",
            "--cache-dir", str(tmp_path / "cache"), "--out-png", str(png), "--n-show", "6"]
    assert cli_main(args) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = SequenceConfig(n_train=12, n_valid=4, n_test=4)
    assert cache_path(config, 7, tmp_path / "cache").is_file()
    assert "train: images (12, 100, 100) float32" in capsys.readouterr().out


def test_plot_sequences_titles_are_labels(small_sequences: dict) -> None:
    import matplotlib.pyplot as plt

    from rstn.viz import plot_sequences

    split = small_sequences["valid"]
    fig = plot_sequences(split, n=6, ncols=3)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in titled] == [" ".join(map(str, split.labels[i])) for i in range(6)]
    assert all(len(ax.patches) == 3 for ax in titled)
    plt.close(fig)
