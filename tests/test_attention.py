"""rstn.attention against known geometry and known boxes, and a save/load round trip of a run's attention."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rstn import attention
from rstn.attention import (
    box_covered,
    box_iou,
    glimpse_corners,
    normalised_to_pixels,
    pixels_to_normalised,
    score_attention,
    sequence_box,
    step_digit_iou,
    theta_box,
)
from rstn.results import RUN_FILE, read_run, write_run
from rstn.sampler import attention_theta, transform

IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def test_end_points_land_on_the_centres_of_the_corner_pixels():
    corners = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0], [1.0, -1.0]])
    # (x, y) order: x runs along the width (W = 100), y along the height (H = 60)
    expected = torch.tensor([[0.5, 0.5], [99.5, 59.5], [50.0, 30.0], [99.5, 0.5]])
    torch.testing.assert_close(normalised_to_pixels(corners, 60, 100), expected)
    # numpy in, numpy out, same numbers
    got = normalised_to_pixels(corners.numpy(), 60, 100)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, expected.numpy())


def test_pixels_normalised_round_trip():
    points = torch.rand(5, 7, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4 - 2
    torch.testing.assert_close(pixels_to_normalised(normalised_to_pixels(points, 33, 100), 33, 100), points)
    pixels = np.array([[0.5, 0.5], [10.0, 20.0], [99.5, 32.5]])
    np.testing.assert_allclose(normalised_to_pixels(pixels_to_normalised(pixels, 33, 100), 33, 100), pixels)
    np.testing.assert_allclose(pixels_to_normalised(pixels, 33, 100)[[0, 2]], [[-1, -1], [1, 1]])
    with pytest.raises(ValueError, match=r"\(x, y\)"):
        normalised_to_pixels(torch.zeros(3, 3), 10, 10)


def test_pixel_convention_is_the_samplers():
    """A theta aimed at pixel centre (x, y) by pixels_to_normalised samples exactly that pixel."""
    image = torch.rand(1, 1, 20, 30, generator=torch.Generator().manual_seed(1))
    target = pixels_to_normalised(torch.tensor([17.5, 4.5]), 20, 30)  # the centre of column 17, row 4
    theta = attention_theta(0.0, float(target[0]), float(target[1]))[None]  # every output point on target
    one = transform(image, theta, size=(1, 1), method="equations")
    torch.testing.assert_close(one[0, 0, 0, 0], image[0, 0, 4, 17])


def test_identity_glimpse_covers_the_canvas_for_every_size():
    torch.testing.assert_close(theta_box(IDENTITY, 60, 100), torch.tensor([0.0, 0.0, 100.0, 60.0]))
    assert theta_box(IDENTITY.expand(4, 3, 2, 3), 100, 100).shape == (4, 3, 4)
    corners = glimpse_corners(IDENTITY, 100, 100)
    torch.testing.assert_close(corners, torch.tensor([[0.5, 0.5], [99.5, 0.5], [99.5, 99.5], [0.5, 99.5]]))


def test_scale_and_translation_give_known_boxes():
    # a half-size glimpse: corner samples at pixel-centre coordinates 0.25 * 99 + 0.5 = 25.25 and 74.75
    half = attention_theta(0.5, 0.0, 0.0)
    torch.testing.assert_close(theta_box(half, 100, 100), torch.tensor([24.75, 24.75, 75.25, 75.25]))
    # a translation by k whole pixels shifts the whole canvas by k (tx = 2k / (W - 1))
    k = 7
    shifted = torch.tensor([[1.0, 0.0, 2 * k / 99], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(theta_box(shifted, 100, 100), torch.tensor([7.0, 0.0, 107.0, 100.0]))
    # a 90-degree rotation of a half-size glimpse covers the same central box
    rotated = torch.tensor([[0.0, -0.5, 0.0], [0.5, 0.0, 0.0]])
    torch.testing.assert_close(theta_box(rotated, 100, 100), theta_box(half, 100, 100))


def test_glimpse_on_a_digit_box_covers_it_and_samples_its_pixels():
    size, (x_min, y_min) = 100, (10, 41)  # a 28 x 28 digit with box (10, 41, 38, 69)
    centre = pixels_to_normalised(torch.tensor([x_min + 14.0, y_min + 14.0]), size, size)
    theta = attention_theta(27 / (size - 1), float(centre[0]), float(centre[1]))  # 28 centres, 27 spacings
    torch.testing.assert_close(theta_box(theta, size, size), torch.tensor([10.0, 41.0, 38.0, 69.0]),
                               rtol=0, atol=1e-4)
    image = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(10))
    glimpse = transform(image, theta[None], size=(28, 28))
    torch.testing.assert_close(glimpse, image[..., y_min : y_min + 28, x_min : x_min + 28], rtol=0, atol=1e-4)


def test_box_iou_known_values():
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])
    torch.testing.assert_close(box_iou(a, a), torch.tensor(1.0))  # identical
    torch.testing.assert_close(box_iou(a, torch.tensor([2.0, 0.0, 4.0, 2.0])), torch.tensor(0.0))  # touching
    torch.testing.assert_close(box_iou(a, torch.tensor([5.0, 5.0, 6.0, 6.0])), torch.tensor(0.0))  # disjoint
    # half overlap: shifted by half its width, the intersection is 2 and the union 6
    torch.testing.assert_close(box_iou(a, torch.tensor([1.0, 0.0, 3.0, 2.0])), torch.tensor(1 / 3))
    torch.testing.assert_close(box_iou(a, torch.tensor([0.5, 0.5, 1.5, 1.5])), torch.tensor(0.25))  # inside
    empty = torch.tensor([1.0, 1.0, 1.0, 1.0])
    torch.testing.assert_close(box_iou(empty, empty), torch.tensor(0.0))
    many = torch.stack([a, a + 1, a + 10])  # (3, 4) against one box: broadcasting
    torch.testing.assert_close(box_iou(many, a), torch.tensor([1.0, 1 / 7, 0.0]))
    with pytest.raises(ValueError):
        box_iou(torch.zeros(3), a)


def digit_boxes() -> torch.Tensor:
    """Three 28 x 28 digits side by side: (1, 3, 4)."""
    return torch.tensor([[[8.0, 30.0, 36.0, 58.0], [36.0, 30.0, 64.0, 58.0], [64.0, 30.0, 92.0, 58.0]]])


def theta_on(boxes: torch.Tensor, size: int = 100) -> torch.Tensor:
    """Attention thetas whose glimpse boxes are exactly `boxes` (square boxes, (..., 4) -> (..., 2, 3))."""
    centre = pixels_to_normalised((boxes[..., :2] + boxes[..., 2:]) / 2, size, size)
    scale = (boxes[..., 2] - boxes[..., 0] - 1) / (size - 1)
    return attention_theta(scale, centre[..., 0], centre[..., 1])


def test_step_digit_iou_and_scores_of_glimpses_on_their_digits():
    boxes = digit_boxes()
    theta = theta_on(boxes)  # (1, 3, 2, 3): step t exactly on digit t
    iou = step_digit_iou(theta, boxes, 100, 100)
    torch.testing.assert_close(iou, torch.eye(3)[None], rtol=0, atol=1e-5)
    score = score_attention(theta, boxes, 100, 100)
    assert score.n == 1 and score.on_target == 1.0 and score.sequence_iou is None
    np.testing.assert_allclose(score.step_iou, [1, 1, 1], atol=1e-5)
    # each digit wholly inside its glimpse; a 27/99 scale on both axes samples (27/99)^2 of the canvas
    assert score.covered == pytest.approx(1.0) and score.area == pytest.approx((27 / 99) ** 2)
    # steps in the wrong order: each glimpse is on another digit
    swapped = score_attention(theta[:, [1, 2, 0]], boxes, 100, 100)
    assert swapped.on_target == 0.0 and max(swapped.step_iou) < 1e-6 and swapped.covered < 1e-6


def test_a_glimpse_half_off_its_digit_and_a_mirrored_one():
    boxes = digit_boxes()
    shifted = boxes + torch.tensor([14.0, 0.0, 14.0, 0.0])  # half a digit to the right
    score = score_attention(theta_on(shifted), boxes, 100, 100)
    assert score.covered == pytest.approx(0.5, abs=1e-5)  # half of each digit is inside
    np.testing.assert_allclose(score.step_iou, [1 / 3] * 3, atol=1e-5)  # 392 / (784 + 784 - 392)
    # a mirror image samples the same box and the same area: |det A|, not det A
    theta = theta_on(boxes)
    mirrored = theta * torch.tensor([[-1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    flipped = score_attention(mirrored, boxes, 100, 100)
    assert flipped.covered == pytest.approx(1.0) and flipped.area == pytest.approx((27 / 99) ** 2)


def test_box_covered_is_the_fraction_of_the_target_inside():
    target = torch.tensor([0.0, 0.0, 10.0, 10.0])
    assert float(box_covered(target, torch.tensor([5.0, 0.0, 30.0, 30.0]))) == pytest.approx(0.5)
    assert float(box_covered(target, torch.tensor([-5.0, -5.0, 30.0, 30.0]))) == pytest.approx(1.0)
    assert float(box_covered(target, torch.tensor([20.0, 20.0, 30.0, 30.0]))) == 0.0
    assert float(box_covered(torch.tensor([3.0, 3.0, 3.0, 8.0]), target)) == 0.0  # an empty target


def test_identity_scores_are_ties_and_the_sequence_iou_of_one_glimpse():
    boxes = digit_boxes()
    identity = score_attention(IDENTITY.expand(1, 3, 2, 3), boxes, 100, 100)
    # the canvas (10,000 px) against a 28 x 28 digit, and a tie between the three digits: a miss
    np.testing.assert_allclose(identity.step_iou, [784 / 10_000] * 3, rtol=1e-6)
    assert identity.on_target == 0.0 and identity.covered == 1.0 and identity.area == pytest.approx(1.0)
    whole = sequence_box(boxes)
    torch.testing.assert_close(whole, torch.tensor([[8.0, 30.0, 92.0, 58.0]]))
    one = score_attention(IDENTITY.expand(1, 1, 2, 3), boxes, 100, 100)
    assert one.step_iou is None and one.on_target is None
    assert one.sequence_iou == pytest.approx(84 * 28 / 10_000) and one.covered == 1.0
    with pytest.raises(ValueError, match="one glimpse per digit"):
        score_attention(IDENTITY.expand(1, 2, 2, 3), boxes, 100, 100)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, mnist_file):
    """A one-epoch smoke run on 10 training sequences whose attention.npz is then rewritten by
    rstn.attention.attention_arrays from an untrained RNN-SPN with a shifted theta bias."""
    from rstn.data import generate_sequences
    from rstn.experiments import run_config
    from rstn.models import rnn_spn
    from rstn.runs import train_run

    config = run_config("rnn-spn-d4", "smoke", seed=0, batch_size=10, eval_batch_size=50, max_epochs=1,
                        n_attention=4)
    splits = generate_sequences(config.data, seed=config.data_seed, data_dir=mnist_file.parent)
    few = lambda s, n: SimpleNamespace(images=s.images[:n], labels=s.labels[:n], boxes=s.boxes[:n])  # noqa: E731
    data = {"train": few(splits["train"], 10), "valid": few(splits["valid"], 10), "test": splits["test"]}
    results = tmp_path_factory.mktemp("results")
    run = train_run(config, results_dir=results, progress="none", data=data)
    torch.manual_seed(0)
    model = rnn_spn(4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # not the identity: the glimpses differ per image and step
    arrays = attention.attention_arrays(model, splits["test"], n=6, device=torch.device("cpu"))
    np.savez(run.run_dir / "attention.npz", **arrays)
    return results, arrays, splits["test"]


def test_attention_arrays_keys_and_shapes(saved_run):
    _, arrays, test = saved_run
    assert set(arrays) == {"indices", "theta", "probabilities", "predictions", "labels", "boxes"}
    assert arrays["theta"].shape == (6, 3, 2, 3) and arrays["theta"].dtype == np.float32
    assert arrays["probabilities"].shape == (6, 3, 10) and arrays["predictions"].shape == (6, 3)
    np.testing.assert_allclose(arrays["probabilities"].sum(-1), 1, rtol=1e-5)
    assert np.array_equal(arrays["labels"], test.labels[:6]) and np.array_equal(arrays["boxes"], test.boxes[:6])
    assert not np.allclose(arrays["theta"], arrays["theta"][:1, :1])  # per image and step


def test_load_saved_attention_round_trip(saved_run):
    results, arrays, test = saved_run
    saved = attention.load_saved_attention(results, profile="smoke", n_images=None)
    assert (saved.profile, saved.seed) == ("smoke", 0) and [r.row for r in saved.runs] == ["rnn-spn-d4"]
    run = saved.run("rnn-spn-d4")
    assert run is saved.runs[0] and saved.run("ffn-spn-d2") is None and run.d == 4
    assert np.array_equal(run.theta, arrays["theta"]) and np.array_equal(run.predictions, arrays["predictions"])
    assert np.array_equal(saved.indices, np.arange(6)) and np.array_equal(saved.labels, arrays["labels"])
    assert np.array_equal(saved.images, test.images[:6]) and np.array_equal(saved.boxes, test.boxes[:6])
    assert len(attention.load_saved_attention(results, profile="smoke", n_images=2).images) == 2


def test_load_saved_attention_notices_other_data(saved_run, tmp_path):
    results, arrays, _ = saved_run
    import shutil

    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    np.savez(copy / "smoke" / "rnn-spn-d4" / "seed0" / "attention.npz", **(arrays | {"boxes": arrays["boxes"] + 1}))
    with pytest.raises(ValueError, match="boxes differ"):
        attention.load_saved_attention(copy, profile="smoke")
    with pytest.raises(FileNotFoundError, match="quick"):
        attention.load_saved_attention(tmp_path, profile="quick")


def test_attention_arrays_of_the_conv_net_have_no_theta():
    from rstn.models import conv_net

    split = SimpleNamespace(images=np.random.default_rng(0).random((3, 100, 100), dtype=np.float32),
                            labels=np.zeros((3, 3), dtype=np.int64))
    arrays = attention.attention_arrays(conv_net(), split, n=8, device=torch.device("cpu"))
    assert arrays["theta"].shape == (3, 0, 2, 3) and arrays["predictions"].shape == (3, 3)
    assert np.array_equal(arrays["indices"], [0, 1, 2]) and "boxes" not in arrays


def test_the_default_profile_is_the_most_complete_one_with_attention(saved_run, tmp_path):
    """A paper run without attention yet (killed before it paused) leaves the smoke attention on show; once
    a paper run in progress saves its attention, that is shown, labelled as in progress."""
    import dataclasses
    import shutil

    results, _, _ = saved_run
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    smoke, paper = copy / "smoke" / "rnn-spn-d4" / "seed0", copy / "paper" / "rnn-spn-d4" / "seed0"
    paper.mkdir(parents=True)
    smoke_record = read_run(smoke / RUN_FILE)
    record = dataclasses.replace(smoke_record, profile="paper", config=smoke_record.config | {"profile": "paper"},
                                 status="running", stop_reason=None)
    write_run(paper / RUN_FILE, record)
    assert attention.load_saved_attention(copy).profile == "smoke"
    shutil.copy(smoke / "attention.npz", paper / "attention.npz")
    saved = attention.load_saved_attention(copy)
    assert saved.profile == "paper" and saved.runs[0].label.endswith("(rnn-spn-d4, in progress: 1 epoch)")
    assert not saved.runs[0].finished and saved.runs[0].epochs == 1


def test_a_finished_run_is_picked_before_one_just_started_and_diverged_runs_are_left_out(saved_run, tmp_path):
    import dataclasses
    import shutil

    results, _, _ = saved_run
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    finished = copy / "smoke" / "rnn-spn-d4" / "seed0"
    record = read_run(finished / RUN_FILE)
    for row, changes in {"rnn-spn-d3": dict(status="running", stop_reason="time_budget", epochs_run=2,
                                                       history=record.history + [record.history[0] | {"epoch": 1}]),
                         "rnn-spn-d2": dict(status="diverged", stop_reason="non_finite_loss", error="loss is nan")}.items():
        run = copy / "smoke" / row / "seed0"
        run.mkdir(parents=True)
        write_run(run / RUN_FILE, dataclasses.replace(record, row=row, config=record.config | {"row": row}, **changes))
        shutil.copy(finished / "attention.npz", run / "attention.npz")
    saved = attention.load_saved_attention(copy, profile="smoke")
    assert [r.row for r in saved.runs] == ["rnn-spn-d3", "rnn-spn-d4"]
    assert saved.run("rnn-spn-d3").label.endswith("(rnn-spn-d3, in progress: 2 epochs)")
    assert saved.pick(["rnn-spn-d3", "rnn-spn-d4"]).row == "rnn-spn-d4"
    assert saved.pick(["rnn-spn-d2", "rnn-spn-d3"]).row == "rnn-spn-d3"
    assert saved.pick(["ffn-spn-d2"]) is None


def test_a_profile_whose_only_attention_is_a_diverged_runs_is_passed_over(saved_run, tmp_path):
    import dataclasses
    import shutil

    results, _, _ = saved_run
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    smoke, paper = copy / "smoke" / "rnn-spn-d4" / "seed0", copy / "paper" / "rnn-spn-d4" / "seed0"
    paper.mkdir(parents=True)
    record = read_run(smoke / RUN_FILE)
    write_run(paper / RUN_FILE, dataclasses.replace(record, profile="paper", config=record.config | {"profile": "paper"},
                                                    status="diverged", stop_reason="non_finite_loss", error="nan"))
    shutil.copy(smoke / "attention.npz", paper / "attention.npz")
    assert attention.load_saved_attention(copy).profile == "smoke"


def test_glimpse_shape_of_known_transforms():
    import math

    from rstn.attention import glimpse_shape

    def theta(a, b, c, d, tx=0.0, ty=0.0):
        return np.array([[[[a, b, tx], [c, d, ty]]]])  # (N=1, T=1, 2, 3)

    identity = glimpse_shape(theta(1, 0, 0, 1), 100, 100)
    # the corner samples sit on pixel centres 0.5 .. 99.5: a 99 x 99 px parallelogram
    assert identity.area == pytest.approx(0.99 ** 2) and identity.x_edge_px == pytest.approx(99)
    assert (identity.top_edge_deg, identity.side_edge_deg, identity.edge_angle_deg) == pytest.approx((0, 0, 90))
    assert identity.centres[0] == pytest.approx((50.0, 50.0))
    half = glimpse_shape(theta(0.5, 0, 0, 0.5, tx=0.5), 100, 100)
    assert half.area == pytest.approx(0.99 ** 2 / 4) and half.centres[0][0] == pytest.approx(50 + 0.5 * 49.5)
    r = math.radians(30)  # a rotation turns both edges alike, clockwise on the image (y down)
    turned = glimpse_shape(theta(math.cos(r), -math.sin(r), math.sin(r), math.cos(r)), 100, 100)
    assert (turned.top_edge_deg, turned.side_edge_deg, turned.edge_angle_deg) == pytest.approx((30, 30, 90))
    sheared = glimpse_shape(theta(1, 0, 1, 1), 100, 100)  # the top edge slopes 45 degrees, the side stays
    assert (sheared.top_edge_deg, sheared.side_edge_deg, sheared.edge_angle_deg) == pytest.approx((45, 0, 45))
    boxes = np.array([[[36.0, 36.0, 64.0, 64.0]]])  # one digit box around the centre
    assert glimpse_shape(theta(1, 0, 0, 1), 100, 100, boxes).centre_offset_px == pytest.approx(0.0)


def test_identity_baseline_and_describe_scored_of_known_boxes():
    # three abutting 28 x 28 digits across a 100 x 100 canvas: the identity box is the canvas (100 x 100)
    boxes = torch.tensor([[[8.0, 36.0, 36.0, 64.0], [36.0, 36.0, 64.0, 64.0], [64.0, 36.0, 92.0, 64.0]]] * 2)
    line = attention.identity_baseline(boxes, 100, 100)
    assert f"IoU {28 * 28 / 100**2:.3f} with a digit" in line and f"{84 * 28 / 100**2:.3f} with a whole" in line
    # a glimpse on each digit: theta scales by 28/100 about the digit's centre (end points on pixel centres)
    on_digits = torch.stack([attention_theta_on(box, 100) for box in boxes[0]])[None].expand(2, 3, 2, 3)
    text = attention.describe_scored("exact", on_digits, boxes, 100, 100)
    assert text.startswith("exact on 2 test sequences: step t on digit t 100 %, target inside 100 %")


def attention_theta_on(box: torch.Tensor, canvas: int) -> torch.Tensor:
    """The theta whose glimpse box (`theta_box`) is exactly `box` (x0, y0, x1, y1) on a square canvas."""
    size = (box[2] - box[0]) - 1  # the corner samples sit half a pixel inside the box
    centre = (box[:2] + box[2:]) / 2
    scale = size / (canvas - 1)
    shift = (centre - canvas / 2) / ((canvas - 1) / 2)
    theta = torch.tensor([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]])
    assert torch.allclose(theta_box(theta, canvas, canvas), box, atol=1e-4)
    return theta
