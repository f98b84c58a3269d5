"""PointRend point selection, subdivision inference, ROI helpers and the Mask2Former sampler."""

import functools

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_compile_matches_eager, assert_matches_reference, assert_opcheck, device_backends, ops_for

import pyops
from pyops import reference

DEVICE_BACKENDS = device_backends()


def randn(*shape, device="cpu", dtype=torch.float32, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device=device, dtype=dtype)


def rand(*shape, device="cpu", seed=1):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)).to(device)


def by_x(points):
    """Rows of points in a canonical order (sorted by x), for comparing sets."""
    order = points[..., 0].argsort(dim=1)
    return torch.gather(points, 1, order.unsqueeze(-1).expand(-1, -1, 2))


# ---- get_uncertain_point_coords_with_randomness ----------------------------------------------


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
def test_selection_equals_reference_for_supplied_candidates(device, backend, dtype):
    R, C, N = 4, 3, 20
    logits = randn(R, C, 9, 11, device=device, dtype=dtype)
    classes = torch.tensor([2, 0, 1, 2], device=device)
    candidates = rand(R, 3 * N, 2, device=device)
    func = functools.partial(pyops.calculate_uncertainty, classes=classes)
    got = pyops.get_uncertain_point_coords_with_randomness(logits, func, N, 3.0, 0.75, candidates=candidates, backend=backend)
    want = reference.get_uncertain_point_coords_with_randomness(logits, func, N, 3.0, 0.75, candidates=candidates)
    K = 15
    assert got.shape == (R, N, 2) and got.dtype == torch.float32
    torch.testing.assert_close(by_x(got[:, :K]), by_x(want[:, :K]), atol=0, rtol=0)
    tail = got[:, K:]
    assert ((tail >= 0) & (tail < 1)).all()


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_selection_is_reproducible_and_backends_agree(device, backend):
    logits = randn(5, 1, 16, 16, device=device)
    runs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        runs.append(pyops.get_uncertain_point_coords_with_randomness(logits, None, 30, 3.0, 0.75, backend=backend))
    assert torch.equal(by_x(runs[0]), by_x(runs[1]))
    assert not torch.equal(by_x(runs[0]), by_x(runs[2]))
    # every kernel draws the same Philox stream: the C++ kernel is the yardstick
    other = "cpu" if device == "cpu" else "cuda"
    torch.manual_seed(7)
    same = pyops.get_uncertain_point_coords_with_randomness(logits, None, 30, 3.0, 0.75, backend=other)
    assert torch.equal(by_x(runs[0]), by_x(same))


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_selected_points_concentrate_where_logits_are_small(device, backend):
    # logit = 8 (x - 0.3): the uncertain band is the vertical line x = 0.3
    xs = (torch.arange(64) + 0.5) / 64
    logits = (8 * (xs - 0.3)).expand(16, 1, 64, 64).contiguous().to(device)
    torch.manual_seed(0)
    pts = pyops.get_uncertain_point_coords_with_randomness(logits, None, 100, 3.0, 0.75, backend=backend).cpu()
    important, fresh = pts[:, :75, 0], pts[:, 75:, 0]
    assert (important - 0.3).abs().mean() < 0.1  # a uniform point averages ~0.26 from the line
    assert 0.35 < fresh.mean() < 0.65 and fresh.std() > 0.2  # the appended points stay uniform


def test_generic_uncertainty_function_runs_reference_composition():
    logits = randn(3, 2, 8, 8)
    func = lambda l: -(l[:, :1] - l[:, 1:]).abs()  # noqa: E731  a margin, not a fused case
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    got = pyops.get_uncertain_point_coords_with_randomness(logits, func, 12, 2.0, 0.5, generator=g1)
    want = reference.get_uncertain_point_coords_with_randomness(logits, func, 12, 2.0, 0.5, generator=g2)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_points=0), "pyops.get_uncertain_point_coords_with_randomness: num_points must be >= 1"),
        (dict(oversample_ratio=0.5), r"oversample_ratio must be in \[1, inf\]"),
        (dict(importance_sample_ratio=1.5), r"importance_sample_ratio must be in \[0, 1\]"),
        (dict(importance_sample_ratio=-0.1), r"importance_sample_ratio must be in \[0, 1\]"),
        (dict(candidates=torch.rand(2, 5, 2)), "candidates must have shape"),
        (dict(logits=torch.randn(2, 3, 8, 8)), "logits has 3 channels: pass classes"),
        (dict(logits=torch.randn(2, 8, 8)), r"coarse_logits must be a \(R, C, H, W\) tensor, got shape \(2, 8, 8\)"),
    ],
)
def test_selection_rejects_bad_inputs(kwargs, match):
    args = dict(logits=torch.randn(2, 1, 8, 8), num_points=10, oversample_ratio=3.0, importance_sample_ratio=0.75)
    args.update(kwargs)
    logits = args.pop("logits")
    with pytest.raises(ValueError, match=match):
        pyops.get_uncertain_point_coords_with_randomness(
            logits, None, args.pop("num_points"), args.pop("oversample_ratio"), args.pop("importance_sample_ratio"), **args
        )


@pytest.mark.parametrize("bad", [3, -1])
def test_selection_checks_classes_without_a_host_sync(bad):
    # torch._assert_async: an immediate RuntimeError on the CPU, a device-side assert on CUDA.
    with pytest.raises(RuntimeError, match=r"pyops.get_uncertain_point_coords_with_randomness: classes must lie in \[0, 3\)"):
        pyops.get_uncertain_point_coords_with_randomness(torch.randn(2, 3, 8, 8), None, 10, 3.0, 0.75, classes=torch.tensor([0, bad]))


# ---- grid helpers and uncertainty ---------------------------------------------------------------


def test_on_grid_indices_come_in_detectron2_topk_order():
    umap = randn(3, 1, 6, 7)
    idx, coords = pyops.get_uncertain_point_coords_on_grid(umap, 10)
    assert torch.equal(idx, torch.topk(umap.view(3, 42), k=10, dim=1)[1])
    want = torch.stack(((idx % 7 + 0.5) / 7, (idx // 7 + 0.5) / 6), dim=-1)
    torch.testing.assert_close(coords, want)


def test_grid_helpers_and_uncertainty():
    side = 5
    theta = torch.tensor([[[0.5, 0.0, 0.5], [0.0, 0.5, 0.5]]])
    want = F.affine_grid(theta, torch.Size((1, 1, side, side)), align_corners=False).view(1, -1, 2).expand(3, -1, -1)
    torch.testing.assert_close(pyops.generate_regular_grid_point_coords(3, side, "cpu"), want)

    umap = randn(2, 1, 4, 6)
    idx, coords = pyops.get_uncertain_point_coords_on_grid(umap, 7)
    best = umap.view(2, -1).topk(7).indices
    assert torch.equal(idx.sort(1).values, best.sort(1).values)
    torch.testing.assert_close(coords[..., 0], (idx % 6 + 0.5) / 6)
    torch.testing.assert_close(coords[..., 1], (idx // 6 + 0.5) / 4)
    assert pyops.get_uncertain_point_coords_on_grid(umap, 1000)[0].shape == (2, 24)  # min(H*W, P)

    logits = randn(3, 4, 5)
    torch.testing.assert_close(pyops.calculate_uncertainty(logits[:, :1]), -logits[:, :1].abs())
    torch.testing.assert_close(pyops.calculate_uncertainty(logits, torch.tensor([3, 0, 1])), -logits[[0, 1, 2], [3, 0, 1]].abs().unsqueeze(1))
    top2 = logits.topk(2, dim=1).values
    torch.testing.assert_close(pyops.calculate_uncertainty_sem_seg(logits), (top2[:, 1] - top2[:, 0]).unsqueeze(1))


# ---- subdivision inference --------------------------------------------------------------------


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_subdivision_step_matches_reference(device, backend):
    logits = randn(3, 7, 5, device=device)
    up, idx, coords = pyops.subdivision_step(logits, 40, backend=backend)
    want_up, want_idx, want_coords = reference.subdivision_step(logits, 40)
    torch.testing.assert_close(up, want_up, atol=1e-6, rtol=1e-5)
    # the same set of uncertainty values (ties may pick different but equally uncertain cells)
    unc = -want_up.flatten(1).abs()
    torch.testing.assert_close(unc.gather(1, idx).sort(1).values, unc.gather(1, want_idx).sort(1).values)
    torch.testing.assert_close(coords, reference.pointrend.grid_coords_of_indices(idx, 14, 10))
    assert pyops.subdivision_step(logits, 10**6, backend=backend)[1].shape == (3, 140)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_subdivision_inference_matches_detectron2_loop(device, backend):
    R, C = 4, 3
    coarse = randn(R, C, 7, 7, device=device)
    classes = torch.tensor([1, 0, 2, 1], device=device)
    fine = randn(R, C, 112, 112, device=device, seed=5)  # what the point head "predicts"

    def point_head(coords, indices):
        return reference.point_sample(fine, coords)

    got = pyops.subdivision_inference(coarse, point_head, classes=classes, num_steps=4, num_points=150, backend=backend)
    want = reference.subdivision_inference(coarse, point_head, classes=classes, num_steps=4, num_points=150)
    assert got.shape == (R, 1, 112, 112)
    # The head samples a noise map at the chosen points, so a coordinate one float32 ulp off
    # (a fused multiply-add in a GPU compiler) moves its value by up to ~ulp * 112 * |slope|:
    # 1e-4 absorbs that; a wrong point or a wrong upsampled value is off by O(1).
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


# ---- ROI helpers and Mask2Former --------------------------------------------------------------


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_fine_grained_features_match_per_image_loop(device, backend):
    features = [randn(2, 3, 16, 20, device=device, seed=2), randn(2, 5, 8, 10, device=device, seed=3)]
    scales = [1 / 4, 1 / 8]
    boxes = [torch.tensor([[4.0, 6.0, 40.0, 50.0], [0.0, 0.0, 80.0, 64.0]], device=device), torch.tensor([[10.0, 3.0, 30.0, 20.0]], device=device)]
    coords = rand(3, 9, 2, device=device)

    def fn(f0, f1, c):
        return pyops.point_sample_fine_grained_features([f0, f1], scales, boxes, c, backend=backend)[0]

    def ref(f0, f1, c):
        return reference.point_sample_fine_grained_features([f0, f1], scales, boxes, c)[0]

    assert_matches_reference(fn, ref, (features[0], features[1], coords))
    image_coords = pyops.point_sample_fine_grained_features(features, scales, boxes, coords, backend=backend)[1]
    torch.testing.assert_close(image_coords[2, :, 0], 10 + coords[2, :, 0] * 20)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_mask2former_sampler(device, backend):
    R = 3
    logits = randn(R, 1, 16, 16, device=device).requires_grad_()
    gt = rand(R, 64, 64, device=device, seed=4) > 0.5
    torch.manual_seed(0)
    coords, point_logits, labels = pyops.sample_points_for_loss(logits, gt, num_points=50, backend=backend)
    assert coords.shape == (R, 50, 2) and point_logits.shape == labels.shape == (R, 50)
    torch.testing.assert_close(labels, reference.point_sample(gt.unsqueeze(1).float(), coords).squeeze(1))
    torch.testing.assert_close(point_logits, reference.point_sample(logits, coords).squeeze(1))
    point_logits.sum().backward()
    want = torch.autograd.grad(reference.point_sample(logits, coords).sum(), logits)[0]
    torch.testing.assert_close(logits.grad, want)
    torch.manual_seed(0)  # float masks give the same labels
    labels_f = pyops.sample_points_for_loss(logits, gt.float(), num_points=50, backend=backend)[2]
    torch.testing.assert_close(labels_f, labels)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_compile_roi_sampling_and_loss_sampler(device, backend):
    features = randn(2, 3, 16, 20, device=device)
    boxes = [torch.tensor([[4.0, 6.0, 40.0, 50.0]], device=device), torch.tensor([[10.0, 3.0, 30.0, 20.0]], device=device)]
    sample = lambda f, c: pyops.point_sample_fine_grained_features([f], [0.25], boxes, c, backend=backend)[0]  # noqa: E731
    assert_compile_matches_eager(sample, (features, rand(2, 9, 2, device=device)))

    logits = randn(2, 1, 8, 8, device=device)
    gt = rand(2, 16, 16, device=device) > 0.5

    def loss_points(logits):
        return pyops.sample_points_for_loss(logits, gt, num_points=20, backend=backend)

    torch._dynamo.reset()
    compiled = torch.compile(loss_points, fullgraph=True, backend="aot_eager")
    torch.manual_seed(0)
    got = compiled(logits)
    torch.manual_seed(0)
    for a, b in zip(got, loss_points(logits)):
        torch.testing.assert_close(a, b)


def test_fine_grained_features_reject_bad_inputs():
    f = [torch.randn(2, 3, 8, 8)]
    boxes = [torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([[1.0, 1.0, 5.0, 5.0]])]
    with pytest.raises(ValueError, match="point_coords has 3 rows but boxes hold 2 ROIs"):
        pyops.point_sample_fine_grained_features(f, [0.25], boxes, torch.rand(3, 4, 2))
    with pytest.raises(ValueError, match="need one scale per feature level"):
        pyops.point_sample_fine_grained_features(f, [0.25, 0.125], boxes, torch.rand(2, 4, 2))
    with pytest.raises(ValueError, match=r"must be \(B, C, H, W\) with B = 2 images"):
        pyops.point_sample_fine_grained_features([torch.randn(3, 3, 8, 8)], [0.25], boxes, torch.rand(2, 4, 2))


def test_mask2former_sampler_rejects_bad_masks():
    with pytest.raises(ValueError, match=r"gt_masks must be \(R, H, W\) with R = 2"):
        pyops.sample_points_for_loss(torch.randn(2, 1, 8, 8), torch.zeros(3, 8, 8, dtype=torch.bool))


# ---- operator checks --------------------------------------------------------------------------


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_opcheck_selection_ops(device, backend):
    logits = randn(3, 2, 6, 7, device=device)
    classes = torch.tensor([1, 0, 1], device=device)
    seed = torch.tensor([1234], device=device)
    op = ops_for(backend).uncertain_point_coords
    assert_opcheck(op, (logits, classes, rand(3, 12, 2, device=device), seed, 8, 12, 6))
    assert_opcheck(op, (logits[:, :1], None, None, seed, 8, 12, 8))
    assert_opcheck(ops_for(backend).subdivision_step, (logits[:, 0], 9))


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_compile_selection(device, backend):
    logits = randn(3, 1, 6, 7, device=device)
    candidates = rand(3, 24, 2, device=device)

    def select(logits):  # no random tail: the output is a function of the inputs
        return by_x(pyops.get_uncertain_point_coords_with_randomness(logits, None, 8, 3.0, 1.0, candidates=candidates, backend=backend))

    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(select, fullgraph=True, backend="aot_eager")(logits), select(logits))
    step = lambda l: pyops.subdivision_step(l, 9, backend=backend)[0]  # noqa: E731  inference only
    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(step, fullgraph=True, backend="aot_eager")(logits[:, 0]), step(logits[:, 0]))


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_point_sample_of_masks(device, backend):
    mask = rand(2, 1, 9, 7, device=device) > 0.5
    coords = rand(2, 30, 2, device=device, seed=6)
    got = pyops.point_sample(mask, coords, backend=backend)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, reference.point_sample(mask.float(), coords))
    torch.testing.assert_close(pyops.point_sample(mask.to(torch.uint8), coords, backend=backend), got)
