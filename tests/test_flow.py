"""Table 11 / Fig. 12: pseudo-dynamic signals, RAFT flow, end-point and angular errors, the figure."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.models.optical_flow import raft_small

from hvc.eval.flow import (
    angular_error,
    endpoint_error,
    load_hvc,
    pseudo_dynamic,
    raft_flow,
    table11_scores,
)
from hvc.report.pseudo_dynamic import FIGURE_GAP, FIGURE_HEADER, flow_figure
from hvc.io import DataError
from hvc.config.params import validate_params
from hvc.config.ids import content_id, train_config
from hvc.train import _rng_state, build_model, train_step


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small convolutions run faster on one thread than fighting over shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def constant(u, v, h, w):
    return torch.stack([torch.full((h, w), float(u)), torch.full((h, w), float(v))])


def frames(h, w, shift=2, seed=0):
    """Two smooth random frames, the second the first shifted right by ``shift`` pixels."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((w + shift, h), Image.BILINEAR))
    return np.array(big[:, shift:]), np.array(big[:, :w])


# --------------------------------------------------------------------------- errors


def test_endpoint_error_known_answers():
    assert endpoint_error(constant(3, 4, 5, 6), constant(0, 0, 5, 6)) == pytest.approx(5.0)
    assert endpoint_error(constant(1, 0, 4, 4), constant(1, 0, 4, 4)) == pytest.approx(0.0)
    # half the pixels off by (3, 4), half exact: mean of the norms, not norm of the mean
    flow = constant(0, 0, 4, 4)
    flow[:, :, :2] = torch.tensor([3.0, 4.0]).view(2, 1, 1)
    assert endpoint_error(constant(0, 0, 4, 4), flow) == pytest.approx(2.5)


def test_endpoint_error_upsamples_the_signal_to_the_flow():
    # a constant unit field on a 2 x 3 grid stays constant when upsampled to 16 x 24
    assert endpoint_error(constant(0, 1, 2, 3), constant(0, 1, 16, 24)) == pytest.approx(0.0, abs=1e-12)
    # unit signal against a flow of 6 px to the right: |(0,1) - (6,0)| = sqrt(37)
    assert endpoint_error(constant(0, 1, 2, 3), constant(6, 0, 16, 24)) == pytest.approx(math.sqrt(37))
    # numpy input works the same
    assert endpoint_error(constant(0, 1, 2, 3).numpy(), constant(6, 0, 16, 24).numpy()) == pytest.approx(math.sqrt(37))
    with pytest.raises(ValueError):
        endpoint_error(torch.zeros(3, 2, 2), torch.zeros(2, 4, 4))


def test_angular_error_known_answers():
    assert angular_error(constant(1, 0, 3, 3), constant(0, 5, 3, 3)) == pytest.approx(90.0)
    assert angular_error(constant(1, 0, 3, 3), constant(-2, 0, 3, 3)) == pytest.approx(180.0)
    assert angular_error(constant(1, 1, 3, 3), constant(7, 7, 3, 3)) == pytest.approx(0.0, abs=1e-6)
    assert angular_error(constant(0, 1, 2, 2), constant(3, 3, 8, 8)) == pytest.approx(45.0)  # upsampled
    # pixels with a flow no longer than min_flow are left out; none left → NaN
    flow = constant(0, 3, 4, 4)
    flow[:, :, :2] = 0.0
    assert angular_error(constant(1, 0, 4, 4), flow, min_flow=0.5) == pytest.approx(90.0)
    assert math.isnan(angular_error(constant(1, 0, 4, 4), constant(0.1, 0, 4, 4), min_flow=1.0))


# --------------------------------------------------------------------------- RAFT


def test_raft_flow_returns_the_frame_size_when_not_a_multiple_of_8():
    torch.manual_seed(0)
    raft = raft_small(weights=None)
    a, b = frames(131, 141)
    flow = raft_flow(a, b, model=raft, num_flow_updates=2)
    assert flow.shape == (2, 131, 141) and flow.dtype == torch.float32
    assert torch.isfinite(flow).all()
    small = frames(45, 70)  # below RAFT's 128-pixel minimum: enlarged for RAFT, returned at 45 x 70
    assert raft_flow(*small, model=raft, num_flow_updates=2).shape == (2, 45, 70)
    with pytest.raises(ValueError):
        raft_flow(a, b[:-1], model=raft)


class ConstantFlow(nn.Module):
    """A stand-in for RAFT: a flow of (1, 0.5) px everywhere at its input size; records the input size."""

    def forward(self, img1, img2, num_flow_updates=12):
        self.seen = tuple(img1.shape[-2:])
        self.range = (float(img1.min()), float(img1.max()))
        flow = torch.zeros(img1.shape[0], 2, *img1.shape[-2:])
        flow[:, 0], flow[:, 1] = 1.0, 0.5
        return [flow]


def test_raft_flow_pads_to_8_and_returns_pixels_of_the_original_frame():
    fake = ConstantFlow()
    a, b = frames(130, 150)
    flow = raft_flow(a, b, model=fake)
    assert fake.seen == (136, 152)  # padded to multiples of 8
    assert -1.0 <= fake.range[0] and fake.range[1] <= 1.0  # the weights' transforms: [-1, 1]
    assert torch.allclose(flow, constant(1, 0.5, 130, 150))
    # RAFT run at half size: its vectors are doubled back into pixels of the frame
    a, b = frames(256, 384)
    flow = raft_flow(a, b, model=fake, resolution=128)
    assert fake.seen == (128, 192)
    assert torch.allclose(flow, constant(2, 1, 256, 384))
    # a frame smaller than RAFT's minimum is enlarged to a 128-pixel short side, vectors shrunk back
    a, b = frames(64, 80)
    flow = raft_flow(a, b, model=fake)
    assert fake.seen == (128, 160)
    assert torch.allclose(flow, constant(0.5, 0.25, 64, 80))


# --------------------------------------------------------------------------- HVC model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint.pt written as the train stage writes it, after one training step."""
    p = validate_params({"device": "cpu", "train": {"crop_size": 32, "batch_size": 2}, "hvc": {"proj_dim": 16}})
    torch.manual_seed(0)
    model = build_model(p)
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=1e-3)
    v = torch.rand(2, 3, 32, 32)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.1, 0.1, 0.9, 0.9]])
    train_step(model, model, opt, {"view1": v, "view2": v.flip(-1), "box1": boxes, "box2": boxes}, 0, 10)
    state = {
        "config_id": content_id(train_config(p)),
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": 1,
        "elapsed": 0.1,
        "rng": _rng_state(),
        "params": p.model_dump(),
    }
    path = tmp_path_factory.mktemp("model") / "checkpoint.pt"
    torch.save(state, path)
    return path, p, model


@pytest.fixture(scope="module")
def loaded(checkpoint):
    path, p, _ = checkpoint
    return load_hvc(path, p)


def test_load_hvc_restores_every_module(checkpoint, loaded):
    path, _, trained = checkpoint
    for model in (loaded, load_hvc(path.parent)):  # the file; its folder with the recorded params
        assert not model.training
        reference = trained.state_dict()
        for key, value in model.state_dict().items():
            assert torch.equal(value, reference[key]), key


def test_pseudo_dynamic_is_the_training_path_and_unit_norm(loaded):
    model = loaded
    a, b = frames(45, 70)
    fwd, bwd = pseudo_dynamic(model, a, b)
    assert fwd.shape == bwd.shape == (2, 6, 9)  # stride 8, rounded up
    assert torch.allclose(torch.linalg.vector_norm(fwd, dim=0), torch.ones(6, 9), atol=1e-5)
    assert torch.allclose(torch.linalg.vector_norm(bwd, dim=0), torch.ones(6, 9), atol=1e-5)
    # the same as training's Eq. 6: M1 = f(online(a), target(b)), M2 = f(target(b), online(a))
    from hvc.propagation import preprocess

    with torch.no_grad():
        o1, _, _, t2 = model.embed(preprocess(a, None), preprocess(b, None))
        assert torch.allclose(fwd, model.pseudo(o1, t2)[0], atol=1e-6)
        assert torch.allclose(bwd, model.pseudo(t2, o1)[0], atol=1e-6)
    assert not torch.allclose(fwd, bwd)
    small, _ = pseudo_dynamic(model, a, b, resolution=24)
    assert small.shape[1] == 3


def test_load_hvc_rejects_what_is_not_a_training_checkpoint(checkpoint, tmp_path):
    path, p, trained = checkpoint
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    encoder = tmp_path / "encoder.pt"
    torch.save(trained.online.backbone.state_dict(), encoder)
    for bad in (text, encoder, tmp_path / "missing.pt"):
        with pytest.raises(DataError) as err:
            load_hvc(bad, p)
        assert str(bad) in str(err.value)
    other = validate_params({"hvc": {"proj_dim": 32}})
    with pytest.raises(DataError, match="proj_dim"):
        load_hvc(path, other)


def test_table11_scores_pairs_and_keys(loaded):
    model = loaded
    video = [frames(40, 56, shift=s)[0] for s in range(3)]
    videos = [video, video[:1], video[:2], video]
    scores = table11_scores(model, videos, ConstantFlow(), max_pairs=3, angle_min_flow=0.1)
    assert scores["pairs"] == 3  # 2 pairs of the first video, none of the second, 1 of the third, then the cap
    # a unit signal against a constant flow: the EPE lies within | |flow| -/+ 1 |
    # (40 x 56 frames are enlarged to RAFT's 128-pixel minimum, so the flow is (1, 0.5) / scale)
    norm = float(torch.linalg.vector_norm(raft_flow(video[0], video[1], ConstantFlow()), dim=0).mean())
    assert norm == pytest.approx(math.hypot(56 / 179, 40 / 128 * 0.5))
    for key in ("forward_epe", "backward_epe"):
        assert norm - 1 - 1e-6 <= scores[key] <= norm + 1 + 1e-6
    assert scores["forward_flow_norm"] == pytest.approx(norm)
    for key in ("forward_angle", "backward_angle"):
        assert 0.0 <= scores[key] <= 180.0
    with pytest.raises(ValueError):
        table11_scores(model, [video[:1]], ConstantFlow())


# --------------------------------------------------------------------------- Fig. 12


def test_flow_figure_writes_a_png_of_the_grid_size(tmp_path):
    a, b = frames(40, 60)
    signals = [(constant(1, 0, 5, 8), constant(0, -1, 5, 8))] * 2
    flows = [constant(2, 1, 40, 60)] * 2
    out = tmp_path / "fig" / "fig12.png"
    flow_figure([a, a], [b, b], signals, flows, out, tile_height=30)
    tile_w = 45  # 30 * 60 / 40
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == (5 * tile_w + 6 * FIGURE_GAP, FIGURE_HEADER + 2 * 30 + 3 * FIGURE_GAP)
        pixels = np.asarray(img.convert("RGB"))
    # the forward tile is one flat colour (a constant direction), not the white background
    y, x = FIGURE_HEADER + FIGURE_GAP + 15, FIGURE_GAP + 2 * (tile_w + FIGURE_GAP) + 20
    assert (pixels[y, x] != 255).any()
    flow_figure([a], [b], signals[:1], None, out, tile_height=30, titles=False)
    with Image.open(out) as img:
        assert img.size == (4 * tile_w + 5 * FIGURE_GAP, 30 + 2 * FIGURE_GAP)
    assert [q.name for q in out.parent.iterdir()] == ["fig12.png"]  # no temporary left behind
