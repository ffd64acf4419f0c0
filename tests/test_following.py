"""rstn.following: how far a glimpse follows a moved digit, on glimpses of known geometry, and the moves
measured (inside the generator's layout only) on a seeded RNN-SPN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rstn import following, live, scenes
from rstn.data import DIGIT_SIZE, SequenceConfig
from rstn.glimpses import pixels_to_normalised

SIZE = 100


def glimpse_at(centre_px: tuple[float, float], scale: float = 0.4) -> np.ndarray:
    """(2, 3) theta of an axis-aligned glimpse `scale` of the canvas wide, centred on a pixel point."""
    tx, ty = pixels_to_normalised(np.array(centre_px, np.float64), SIZE, SIZE)
    return np.array([[scale, 0.0, tx], [0.0, scale, ty]])


def digit_centre(xy: tuple[int, int], move: tuple[int, int] = (0, 0)) -> tuple[float, float]:
    return xy[0] + move[0] + DIGIT_SIZE / 2, xy[1] + move[1] + DIGIT_SIZE / 2


DIGITS = ((8, 30), (36, 25), (64, 20))  # top-left px of three abutting digits


def reading(move: tuple[int, int] | None, moved: int = 1, follow: float = 1.0) -> np.ndarray:
    """(3, 2, 3): a glimpse on each digit, the one on `moved` shifted by `follow` x `move`."""
    thetas = []
    for d, xy in enumerate(DIGITS):
        shift = (0, 0) if move is None or d != moved else (follow * move[0], follow * move[1])
        thetas.append(glimpse_at(digit_centre(xy, shift)))
    return np.stack(thetas)


def test_a_glimpse_that_moves_with_the_digit_follows_it_fully():
    answer = following.following(reading(None), reading((0, 8)), DIGITS[1], (0, 8), 1, SIZE)
    assert answer.glimpse == 1 and answer.move == (0, 8)
    assert answer.along == pytest.approx(1.0) and answer.others == pytest.approx((0.0, 0.0), abs=1e-9)
    assert answer.covered == pytest.approx(1.0)  # a 40 px box centred on the 28 px place


@pytest.mark.parametrize("follow", [0.0, 0.25, -1.0])
def test_along_is_the_fraction_of_the_move(follow):
    answer = following.following(reading(None), reading((4, -8), follow=follow), DIGITS[1], (4, -8), 1, SIZE)
    assert answer.along == pytest.approx(follow)


def test_a_glimpse_left_behind_no_longer_holds_the_digit():
    answer = following.following(reading(None), reading(None), DIGITS[1], (0, 20), 1, SIZE)
    assert answer.along == pytest.approx(0.0)
    # the 40 px box spans y in [19, 59) around the old centre 39; the moved place is [45, 73): 14 of 28 rows
    assert answer.covered == pytest.approx(14 / 28, abs=0.02)


def test_the_glimpse_looking_at_a_digit_is_the_nearest_one():
    swapped = reading(None)[[2, 1, 0]]  # step 1 looks at digit 3
    answer = following.following(swapped, swapped, DIGITS[2], (0, 8), 2, SIZE)
    assert answer.glimpse == 0


def test_a_move_of_nothing_is_refused():
    with pytest.raises(ValueError, match="no direction"):
        following.following(reading(None), reading(None), DIGITS[1], (0, 0), 1, SIZE)


@pytest.fixture(scope="module")
def material(mnist_file) -> scenes.Material:
    config = SequenceConfig(n_train=0, n_valid=0, n_test=40)
    return scenes.scene_material(config, seed=0, n_sequences=8, data_dir=mnist_file.parent)


def test_the_generator_s_own_sequences_are_in_its_layout_and_steep_or_outside_ones_are_not(material):
    assert all(following.in_layout(s, material) for s in material.sequences)
    scene = material.sequences[0]
    high = material.config.slope_range[1]
    ys = [y for _, y in scene.digit_xy]
    too_steep = following.moved(scene, 1, (0, ys[0] + high + 1 - ys[1]))  # digit 2 one px past the step
    assert not following.in_layout(too_steep, material)
    assert not following.in_layout(following.moved(scene, 0, (0, -scene.digit_xy[0][1] - 1)), material)


def test_measure_answers_every_in_layout_move_as_following_does(material):
    model = live.random_model(d=3, seed=0)
    answers = following.measure(model, material)
    expected = [(i, d, m) for i, s in enumerate(material.sequences) for d in range(3)
                for m in following.VERTICAL_MOVES if following.in_layout(following.moved(s, d, m), material)]
    assert 0 < len(answers) == len(expected) <= 8 * 3 * 2
    i, d, move = expected[-1]
    scene = material.sequences[i]
    with torch.no_grad():
        theta = [model(torch.from_numpy(scenes.compose(material, s))[None, None]).theta[0].double().numpy()
                 for s in (scene, following.moved(scene, d, move))]
    alone = following.following(*theta, scene.digit_xy[d], move, d, SIZE)
    assert (answers[-1].digit, answers[-1].glimpse, answers[-1].move) == (alone.digit, alone.glimpse, alone.move)
    assert answers[-1].along == pytest.approx(alone.along, abs=1e-4)  # batched or alone: float32 rounding
    assert answers == following.measure(model, material)  # eval mode: no randomness


def test_describe_gives_the_median_and_says_when_nothing_was_measured():
    answers = [following.Following(1, 1, (0, 8), a, (0.1, 0.2), 1.0) for a in (0.1, 0.3, 0.5)]
    line = following.describe(answers)
    assert line.startswith("3 moves of a digit 8 px up or down")
    assert "moved 30 % as far as the digit (median; quartiles 20-40 %" in line and "the other two 15 %" in line
    assert "moves on its own" in line and "in 100 % of the moves." in line
    together = [following.Following(1, 1, (0, 8), 0.3, (0.25, 0.3), 1.0)]
    assert "mostly move together" in following.describe(together)
    assert following.describe([]).startswith("No move")
