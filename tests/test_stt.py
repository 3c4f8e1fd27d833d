"""STT (Spatial-then-Temporal): the loss pieces on hand-built tensors, the frozen teacher,
a tiny two-phase run driven by a minimal loop (the generic loop's calls: start_phase,
make_optimizer, lr_at, loss, backward, step, after_step), and an exact resume across the
switch from the spatial to the temporal phase."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from hvc.config.params import Params, ParamsError
from hvc.methods.liir.loss import window_size
from hvc.methods.stt.loss import (
    entropy,
    entropy_mask,
    local_correlation,
    local_distillation_loss,
    pooled_target,
    reconstruct,
)
from hvc.methods.stt.method import STT, load_teacher_checkpoint
from hvc.methods.stt.model import ResNet18, STTEncoder
from hvc.methods.stt.params import PRESET, STTParams


def window_to_dense(corr: torch.Tensor, h: int, w: int, radius: int) -> torch.Tensor:
    """(B, h·w, P²) window rows → (B, h·w, h·w) dense rows (cells outside the frame dropped)."""
    p = window_size(radius)
    dense = corr.new_zeros(corr.shape[0], h * w, h * w)
    for n in range(h * w):
        y, x = divmod(n, w)
        for k in range(p * p):
            ry, rx = y + k // p - radius, x + k % p - radius
            if 0 <= ry < h and 0 <= rx < w:
                dense[:, n, ry * w + rx] = corr[:, n, k]
    return dense


def dense_to_window(dense: torch.Tensor, h: int, w: int, radius: int) -> torch.Tensor:
    """Inverse of :func:`window_to_dense`; asserts nothing lies outside the window."""
    p = window_size(radius)
    out = dense.new_zeros(dense.shape[0], h * w, p * p)
    covered = torch.zeros_like(dense, dtype=torch.bool)
    for n in range(h * w):
        y, x = divmod(n, w)
        for k in range(p * p):
            ry, rx = y + k // p - radius, x + k % p - radius
            if 0 <= ry < h and 0 <= rx < w:
                out[:, n, k] = dense[:, n, ry * w + rx]
                covered[:, n, ry * w + rx] = True
    assert torch.all(dense[~covered] == 0), "mass outside the window"
    return out


# --------------------------------------------------------------------------- loss pieces


def test_entropy_of_a_hand_built_correlation_and_both_masks():
    corr = torch.tensor([[[0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]]])
    ent = entropy(corr)
    assert torch.allclose(ent, torch.tensor([[4 * 1.3862944, 0.3566749 + 3 * 2.3025851]]), atol=1e-5)
    # Eq. 8 as printed (Σ −log c) ranks the peaked row above the uniform one
    assert ent[0, 1] > ent[0, 0]
    valid = torch.tensor([[True, True, False, False], [True, True, True, True]])
    assert torch.allclose(entropy(corr, valid)[0, 0], torch.tensor(2 * 1.3862944), atol=1e-5)

    ent_map = torch.tensor([[[8.0, 7.0, 6.0, 5.0], [1.0, 2.0, 3.0, 4.0]]])
    # official: rows sorted, threshold = row int(4 * 0.7) - 1 = 1 of the sorted map = [4, 3, 2, 1]
    assert entropy_mask(ent_map, 0.7, "official").tolist() == [[[1, 1, 1, 1], [0, 0, 1, 1]]]
    # global: threshold = the int(8 * 0.7) = 5th largest (4): the four above it are kept
    assert entropy_mask(ent_map, 0.7, "global").tolist() == [[[1, 1, 1, 1], [0, 0, 0, 0]]]
    with pytest.raises(ValueError, match="selects nothing"):
        entropy_mask(ent_map, 0.2, "official")


def test_pooled_target_of_an_identity_correlation_is_a_quarter_on_the_centre():
    h0, r0, r1 = 8, 4, 2
    p0 = window_size(r0)
    ident = torch.zeros(1, h0 * h0, p0 * p0)
    ident[..., (p0 * p0) // 2] = 1.0  # each query copies its own reference cell
    target = pooled_target(ident, (h0, h0), r0, r1, "mean")
    p1 = window_size(r1)
    expected = torch.zeros(1, (h0 // 2) ** 2, p1 * p1)
    expected[..., (p1 * p1) // 2] = 0.25  # 4 of the 16 (query, reference) pairs of each block match
    assert torch.equal(target, expected)
    assert torch.equal(pooled_target(ident, (h0, h0), r0, r1, "sum"), 4 * expected)


@pytest.mark.parametrize("radii", [(4, 2), (12, 6), (3, 2)])
def test_pooled_target_equals_dense_two_by_two_average_pooling(radii):
    r0, r1 = radii
    h0 = w0 = 14 if r0 == 12 else 8
    torch.manual_seed(0)
    f = torch.randn(2, 2, 16, h0, w0)
    c0 = local_correlation(f[:, 1], f[:, 0], r0)
    dense = window_to_dense(c0, h0, w0, r0)  # (B, q, r)
    b, h1, w1 = 2, h0 // 2, w0 // 2
    # the authors' pooling: over reference cells, then over query cells
    pooled = F.avg_pool2d(dense.view(b, h0 * w0, h0, w0), 2).flatten(2).transpose(1, 2)
    pooled = F.avg_pool2d(pooled.reshape(b, h1 * w1, h0, w0), 2).flatten(2).transpose(1, 2)
    ours = pooled_target(c0, (h0, w0), r0, r1, "mean")
    assert torch.allclose(ours, dense_to_window(pooled, h1, w1, r1), atol=1e-7)
    assert torch.allclose(ours.sum(-1), torch.full((b, h1 * w1), 0.25), atol=1e-6)
    assert not ours.requires_grad


def test_reconstruction_through_an_identity_correlation_returns_the_reference_colours():
    h = w = 6
    # one-hot position features: F(i)·F(j) = 400 if i = j else 0, so the softmax is the identity
    feats = 20.0 * torch.eye(h * w).view(1, h * w, h, w)
    corr = local_correlation(feats, feats, radius=3)
    colours = torch.rand(1, 1, h, w)
    assert torch.allclose(reconstruct(corr, colours, 3), colours, atol=1e-6)
    shifted = torch.roll(feats, 1, dims=-1)  # target cell (y, x) looks like reference cell (y, x - 1)
    rec = reconstruct(local_correlation(shifted, feats, radius=3), colours, 3)
    assert torch.allclose(rec[..., 1:], colours[..., :-1], atol=1e-6)


def test_local_distillation_counts_kept_rows_over_every_reference_cell():
    corr = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    target = torch.zeros_like(corr)
    mask = torch.tensor([[1.0, 0.0]])
    assert torch.isclose(local_distillation_loss(corr, target, mask, ref_cells=4), torch.tensor(1.0 / 4))
    assert local_distillation_loss(corr, target, torch.zeros(1, 2), 4) == 0


# --------------------------------------------------------------------------- the method


def tiny_config(**kw) -> STTParams:
    base = dict(
        moco_queue=8, moco_hidden=32, moco_dim=16, view_size=32, crop_size=64, spatial_lr=0.05, temporal_lr=1e-3,
        spatial_share=0.5,
    )  # fmt: skip
    return STTParams(**(base | kw))


def fake_params(config: STTParams) -> SimpleNamespace:
    return SimpleNamespace(stt=config, train=Params().train, seed=0)


def smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    """(n, 3, size, size) uint8 smooth random colour fields."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g)
    return (F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1) * 255).to(torch.uint8)


def batches(method: STT, params) -> list[dict[str, torch.Tensor]]:
    """Fixed batches through the method's own transforms: phase 0 two MoCo views of 4
    images, phase 1 two pairs (a frame and the same frame shifted by (3, 5) pixels)."""
    torch.manual_seed(1)
    views = method.data_spec(params, 0).transform
    spatial = [views(im) for im in smooth_images(4, 48, 0)]
    crop = method.data_spec(params, 1).transform
    frames = smooth_images(2, 80, 1)
    pairs = [crop(c) for c in torch.stack([frames, torch.roll(frames, shifts=(3, 5), dims=(-2, -1))], dim=1)]
    return [{k: torch.stack([t[k] for t in group]) for k in group[0]} for group in (spatial, pairs)]


def run(method: STT, params, fixed, start: int, stop: int, total: int, optimizer=None, recheck: bool = False):
    """The generic loop's calls for steps start..stop-1 of total. Returns the step losses,
    the optimizer, and (``recheck``) each step's loss on the same batch right after its
    optimizer step (same queue, key encoder, dropped channel)."""
    losses, rechecked = [], []
    first_temporal = method.phase_steps(total)
    for step in range(start, stop):
        phase = 0 if step < first_temporal else 1
        if (step == start and optimizer is None) or step == first_temporal:
            method.start_phase(phase)
            optimizer = method.make_optimizer(params)
        for g in optimizer.param_groups:
            g["lr"] = method.lr_at(step, total, 0.0)
        torch.manual_seed(100 + step)  # the loop's per-step draws (dropped colour channel)
        method.train()
        out = method.loss(fixed[phase])
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        if recheck:
            torch.manual_seed(100 + step)
            with torch.no_grad():
                rechecked.append(float(method.loss(fixed[phase])["loss"]))
        method.after_step(step, total)
        losses.append(float(out["loss"].detach()))
    return losses, optimizer, rechecked


def test_phases_data_specs_and_encoder():
    cfg = tiny_config()
    method = STT(cfg)
    params = fake_params(cfg)
    assert [(p.name, p.kind, p.share) for p in method.phases()] == [("spatial", "views", 0.5), ("temporal", "clips", 0.5)]
    assert method.data_spec(params, 0).kind == "views"
    spec = method.data_spec(params, 1)
    assert (spec.kind, spec.clip_length, spec.frame_gap) == ("clips", 2, 1)
    sample = spec.transform(smooth_images(2, 80, 3))
    assert sample["frames"].shape == sample["rgb"].shape == (2, 3, 64, 64)
    enc = STT.load_encoder(method.encoder().state_dict(), method.encoder_spec())
    x = torch.randn(1, 3, 48, 64)
    assert enc(x, "layer3").shape == (1, 256, 6, 8) and enc(x, "layer2").shape == (1, 128, 12, 16)
    assert torch.equal(enc(x), method.encoder().eval()(x))
    assert method.encoder_spec().colour_space == "lab" and PRESET["feature_layer"] == "layer3"
    s = ResNet18("student")(torch.randn(1, 3, 128, 128), ("layer2", "layer3", "layer4"))
    assert [tuple(v.shape[-2:]) for v in s.values()] == [(32, 32), (16, 16), (4, 4)]  # /4, /8, /32
    assert ResNet18("teacher")(torch.randn(1, 3, 128, 128))["layer4"].shape == (1, 512, 4, 4)
    with pytest.raises(ValueError, match="state dict does not fit"):
        STT.load_encoder({"conv1.weight": torch.zeros(1)}, method.encoder_spec())
    assert isinstance(method.encoder(), STTEncoder)


def test_the_teacher_stays_frozen_and_both_steps_lower_the_loss():
    cfg = tiny_config()
    params = fake_params(cfg)
    torch.manual_seed(0)
    method = STT(cfg)
    fixed = batches(method, params)
    losses, opt, after = run(method, params, fixed, 0, 2, 4, recheck=True)
    assert all(a < b for a, b in zip(after, losses)), (losses, after)  # each InfoNCE step lowers the loss
    assert not any(p.requires_grad for p in method.student.parameters())  # unused in the spatial phase
    teacher = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    losses, _, after = run(method, params, fixed, 2, 4, 4, opt, recheck=True)
    assert all(a < b for a, b in zip(after, losses)), (losses, after)  # each temporal step too
    torch.manual_seed(102)  # the first temporal step's dropped channel
    with torch.no_grad():
        assert float(method.loss(fixed[1])["loss"]) < losses[0]  # and both steps lower it overall
    after_state = method.teacher.state_dict()
    assert all(torch.equal(teacher[k], after_state[k]) for k in teacher)  # weights and BN statistics
    assert all(not p.requires_grad and p.grad is None for p in method.moco.parameters())
    assert all(p.requires_grad for p in method.student.parameters())
    method.train()
    assert not method.teacher.training and method.student.training
    assert not torch.equal(method.student.layer1[0].conv1.weight, method.teacher.layer1[0].conv1.weight)


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


RESUME_TOTAL = 4  # two spatial steps, then two temporal steps


@pytest.fixture(scope="module")
def uninterrupted():
    """(config, params, batches, initial state, losses and final state of a run without a break)."""
    cfg = tiny_config()
    params = fake_params(cfg)
    torch.manual_seed(0)
    ref = STT(cfg)
    fixed = batches(ref, params)
    init = _roundtrip(ref.state_dict())
    losses, _, _ = run(ref, params, fixed, 0, RESUME_TOTAL, RESUME_TOTAL)
    return cfg, params, fixed, init, losses, ref.state_dict()


# 1: a spatial checkpoint resumed through the switch; 2: the last spatial step's checkpoint
# (its student not yet initialised) resumed at the switch
@pytest.mark.parametrize("stop_at", [1, 2])
def test_exact_resume_across_the_step_switch(uninterrupted, stop_at):
    cfg, params, fixed, init, ref_losses, expected = uninterrupted
    torch.manual_seed(0)
    first = STT(cfg)
    first.load_state_dict(init)
    _, opt, _ = run(first, params, fixed, 0, stop_at, RESUME_TOTAL)
    state, opt_state = _roundtrip(first.state_dict()), _roundtrip(opt.state_dict())
    assert not bool(state["student_initialised"])

    torch.manual_seed(123)  # a fresh process: other random weights, overwritten by the checkpoint
    second = STT(cfg)
    phase = 0 if stop_at < second.phase_steps(RESUME_TOTAL) else 1
    second.start_phase(phase)  # the loop: start_phase before loading the checkpoint
    second.load_state_dict(state)
    opt2 = second.make_optimizer(params)
    if phase == 0:
        opt2.load_state_dict(opt_state)
    losses, _, _ = run(second, params, fixed, stop_at, RESUME_TOTAL, RESUME_TOTAL, opt2)
    assert losses == ref_losses[stop_at:]
    final = second.state_dict()
    assert all(torch.equal(final[k], expected[k]) for k in expected)


def test_teacher_checkpoint_skips_the_spatial_phase_and_initialises_both(tmp_path):
    torch.manual_seed(5)
    trunk = ResNet18("teacher")
    path = tmp_path / "moco.pth"
    state = {f"module.encoder_q.{k}": v for k, v in trunk.state_dict().items()}
    state |= {"module.encoder_k.conv1.weight": torch.zeros(64, 3, 7, 7), "module.encoder_q.fc.weight": torch.zeros(2, 512)}
    torch.save({"state_dict": state}, path)
    cfg = tiny_config(teacher_checkpoint=str(path))
    method = STT.build(fake_params(cfg))
    assert method.phases()[0].share == 0.0 and method.phase_steps(100) == 0
    method.start_phase(1)
    assert torch.equal(method.teacher.conv1.weight, trunk.conv1.weight)
    assert torch.equal(method.student.conv1.weight, trunk.conv1.weight)
    with pytest.raises(ParamsError, match="no such file"):
        load_teacher_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "bad.pth").write_text("not a checkpoint")
    with pytest.raises(ParamsError, match="not a weights-only PyTorch checkpoint"):
        load_teacher_checkpoint(tmp_path / "bad.pth")
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "small.pth")
    with pytest.raises(ParamsError, match="does not fit a ResNet-18"):
        load_teacher_checkpoint(tmp_path / "small.pth")
