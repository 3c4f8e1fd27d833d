"""Mask-VOS: clustering, losses, decoder, inference, and tiny training runs on generated data."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from hvc.propagation import PropagationConfig, propagate_video
from hvc.methods.maskvos.clustering import (
    ClusterCache,
    assign,
    cluster_video,
    pixel_embeddings,
    position_code,
    pseudo_labels,
    small_clusters,
)
from hvc.methods.maskvos.inference import memory_affinity, propagate_video_maskvos
from hvc.methods.maskvos.loss import (
    apply_transform,
    dul_cross_view_loss,
    dul_temporal_loss,
    grid_index,
    long_term_loss,
    random_transform,
    readout,
    reference_affinity,
    short_term_loss,
)
from hvc.methods.maskvos.method import MaskVOS
from hvc.methods.maskvos.model import soft_aggregate
from hvc.methods.maskvos.params import PRESET, MaskVOSInference, MaskVOSParams

ARI_MIN = 0.9
"""Adjusted Rand index the clustering must reach on the generated video (random labels: ~0)."""


def _segment_video(frames: int = 3, size: int = 16, dim: int = 32, noise: float = 0.15, seed: int = 0):
    """Features (T, D, h, w) of a video with 4 known segments (quadrants drifting by one cell
    per frame), each a random unit prototype plus Gaussian noise, and the (T, h, w) truth."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.nn.functional.normalize(torch.randn(4, dim, generator=g), dim=1)
    truth = torch.zeros(frames, size, size, dtype=torch.long)
    for t in range(frames):
        c = size // 2 + t
        truth[t, :, c:] += 1
        truth[t, c - t :, :] += 2
    feats = protos[truth].permute(0, 3, 1, 2) + noise * torch.randn(frames, dim, size, size, generator=g)
    return feats, truth


def test_clustering_recovers_known_segments():
    feats, truth = _segment_video()
    points = pixel_embeddings(feats, position=True, frequencies=4, weight=0.5)
    assert points.shape == (3 * 16 * 16, 32 + 24)
    centroids, keep = cluster_video(points, clusters=4, iters=100, largest=0.4, seed=0)
    labels = assign(points, centroids)
    ari = adjusted_rand_score(truth.flatten().numpy(), labels.numpy())
    assert ari > ARI_MIN, ari
    assert keep.all()  # every quadrant is below 40 %
    # the same seed gives the same centroids (exact resume relies on it)
    again, _ = cluster_video(points, clusters=4, iters=100, largest=0.4, seed=0)
    assert torch.equal(centroids, again)


def test_position_code_is_sinusoidal_with_the_given_norm():
    code = position_code(2, 3, 5, frequencies=4, weight=0.5)
    assert code.shape == (30, 24)
    assert torch.allclose(code.norm(dim=1), torch.full((30,), 0.5), atol=1e-5)
    # cells differing only in x differ only in the x part of the code
    grid = code.view(2, 3, 5, 24)
    assert torch.equal(grid[0, 0, 0, :16], grid[0, 0, 4, :16]) and not torch.equal(grid[0, 0, 0, 16:], grid[0, 0, 4, 16:])


def test_large_clusters_become_background():
    labels = torch.tensor([0] * 60 + [1] * 25 + [2] * 15)
    keep = small_clusters(labels, 3, 0.4)
    assert keep.tolist() == [False, True, True]
    assert pseudo_labels(labels, keep).unique().tolist() == [0, 2, 3]
    assert (pseudo_labels(labels, keep)[:60] == 0).all()
    assert small_clusters(labels, 3, 0.6).all()


def test_cluster_cache_refreshes_stale_videos_and_evicts_least_recent():
    cache = ClusterCache(capacity=2, clusters=2, dim=3)
    c, keep = torch.ones(2, 3), torch.tensor([True, False])
    assert cache.fresh(11, step=0, interval=5) == -1
    s = cache.store(11, c, keep, step=0)
    assert cache.fresh(11, step=4, interval=5) == s and cache.fresh(11, step=5, interval=5) == -1
    cache.store(22, 2 * c, keep, step=1)
    cache.used[s] = 3  # video 11 read last
    s3 = cache.store(33, 3 * c, keep, step=4)
    assert cache.slot(22) == -1 and cache.slot(11) == s and s3 != s
    state = torch.load(_roundtrip(cache.state_dict()), weights_only=True)
    other = ClusterCache(capacity=2, clusters=2, dim=3)
    other.load_state_dict(state)
    assert torch.equal(other.centroids, cache.centroids) and torch.equal(other.ids, cache.ids)


def test_soft_aggregation_sums_to_one():
    prob = torch.rand(2, 4, 5, 6)
    logits = soft_aggregate(prob, dim=1)
    assert logits.shape == (2, 5, 5, 6)
    assert torch.allclose(logits.softmax(1).sum(1), torch.ones(2, 5, 6), atol=1e-6)
    one = soft_aggregate(torch.tensor([[0.9], [0.2]]), dim=1).softmax(1)
    assert one[0].argmax() == 1 and one[1].argmax() == 0


def test_readout_with_identity_affinity_returns_the_reference_mask():
    mask = torch.rand(1, 1, 3, 4, 5)  # (B, N, C, h, w)
    eye = torch.eye(20)[None]
    assert torch.equal(readout(eye, mask).view(1, 3, 4, 5), mask[:, 0])
    # distinct keys and a sharp temperature give (nearly) the identity affinity
    keys = torch.nn.functional.normalize(torch.randn(1, 64, 4, 5), dim=1)
    aff = reference_affinity(keys[:, None], keys, temperature=0.01)
    assert torch.allclose(aff.sum(1), torch.ones(1, 20), atol=1e-5)
    assert torch.allclose(readout(aff, mask).view(1, 3, 4, 5), mask[:, 0], atol=1e-3)


def test_correspondence_losses_prefer_equivariant_features():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 16, 8, 8, generator=g)
    theta = random_transform(2, (0.7, 1.0), g)
    warped = apply_transform(feats, theta)
    assert short_term_loss(warped, warped, 0.05) < 0.1  # E(Φ(I_t)) = Φ(E(I_t+1)): matched
    assert short_term_loss(warped, warped.flip(-1).roll(3, -2), 0.05) > 1.0
    # L_Long: targets are found with x', scored with x; x = x' = i_t gives a small loss
    assert long_term_loss(feats, feats, feats, 0.05) < 0.1
    identity = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]).expand(2, 2, 3)
    assert torch.allclose(apply_transform(feats, identity), feats, atol=1e-5)


def _roundtrip(state) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


def _video(frames: int = 3, h: int = 40, w: int = 48):
    rng = np.random.default_rng(0)
    frames_ = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(frames)]
    lab = np.zeros((h, w), np.uint8)
    lab[8:20, 8:24] = 1
    lab[24:36, 28:44] = 2
    return frames_, lab


def test_decoder_is_saved_loaded_and_used_by_inference():
    torch.manual_seed(0)
    method = MaskVOS(MaskVOSParams(size=32))
    states = {k: torch.load(_roundtrip(m.state_dict()), weights_only=True) for k, m in method.inference_modules().items()}
    assert set(states) == {"value_encoder", "decoder"}
    spec = method.encoder_spec()
    enc = MaskVOS.load_encoder(torch.load(_roundtrip(method.encoder().state_dict()), weights_only=True), spec)
    modules = {"encoder": enc, **MaskVOS.load_inference_modules(states)}
    frames, lab = _video()
    cfg = MaskVOSInference(rounds=1, context=1)
    out = propagate_video_maskvos(modules, frames, lab, cfg)
    assert out.shape == (3, 40, 48) and (out[0] == lab).all()
    ref = {"encoder": method.encoder_net.eval(), **{k: m.eval() for k, m in method.inference_modules().items()}}
    assert (propagate_video_maskvos(ref, frames, lab, cfg) == out).all()
    # the decoder is used: its output bias moves every pixel's object probabilities
    states["decoder"]["pred.bias"] = torch.tensor([8.0])
    changed = propagate_video_maskvos({"encoder": enc, **MaskVOS.load_inference_modules(states)}, frames, lab, cfg)
    assert (changed != out).any()
    with pytest.raises(ValueError, match="does not fit"):
        MaskVOS.load_inference_modules({"value_encoder": states["value_encoder"], "decoder": {"x": torch.zeros(1)}})


def test_both_inference_modes_and_plain_propagation_run():
    torch.manual_seed(0)
    method = MaskVOS(MaskVOSParams(size=32))
    modules = {"encoder": method.encoder_net.eval(), **{k: m.eval() for k, m in method.inference_modules().items()}}
    frames, lab = _video()
    later = {2: np.where(lab == 2, 3, 0).astype(np.uint8)}
    for cfg in (MaskVOSInference(rounds=0), MaskVOSInference.official()):
        out = propagate_video_maskvos(modules, frames, lab, cfg, later_labels=later)
        assert out.shape == (3, 40, 48) and (out[2][later[2] > 0] == 3).all()
    plain = propagate_video(
        method.encoder(), frames, lab, PropagationConfig(**{k: PRESET[k] for k in ("topk", "context", "radius", "temperature")}), layer=PRESET["feature_layer"]
    )
    assert plain.shape == (3, 40, 48)


def test_official_affinity_keeps_topk_and_the_first_frame_unwindowed():
    keys = torch.nn.functional.normalize(torch.randn(3, 8, 6, 6), dim=1)
    cfg = MaskVOSInference.official().model_copy(update={"radius": 2, "topk": 4, "query_chunk": 7})
    aff = memory_affinity(keys, keys[1], cfg, (6, 6))
    assert aff.shape == (3 * 36, 36)
    assert torch.allclose(aff.sum(0), torch.ones(36), atol=1e-5)
    assert ((aff > 0).sum(0) <= 4).all()
    dense = memory_affinity(keys, keys[1], MaskVOSInference(query_chunk=5), (6, 6))
    assert torch.allclose(dense, memory_affinity(keys, keys[1], MaskVOSInference(), (6, 6)), atol=1e-6)


def test_params_check_the_long_term_pair_and_phase_data():
    with pytest.raises(ValueError, match="long_min_gap"):
        MaskVOSParams(frame_gap_mask=2)
    method = MaskVOS(MaskVOSParams())
    assert [(p.name, p.kind, p.share) for p in method.phases()] == [("correspondence", "clips", 0.75), ("mask", "clips", 0.25)]
    params = SimpleNamespace(train=SimpleNamespace(crop_size=256))
    spec0, spec1 = method.data_spec(params, 0), method.data_spec(params, 1)
    assert (spec0.clip_length, spec0.frame_gap, spec1.clip_length, spec1.frame_gap) == (5, 2, 3, 3)
    assert method.batch_size(0) is None and method.batch_size(1) is None  # the loop's batch (equal budgets)
    assert MaskVOS(MaskVOSParams(batch_corr=16, batch_mask=12)).batch_size(1) == 12
    out = spec1.transform(torch.randint(0, 255, (3, 3, 300, 400), dtype=torch.uint8))
    assert out["frames"].shape == (3, 3, 256, 256)


# ---------------------------------------------------------------- tiny training runs

TINY = dict(size=32, clusters=2, kmeans_iters=20, cluster_cache=4, batch_corr=1, batch_mask=1, lr_corr=1e-3, lr_mask=1e-3)
PARAMS = SimpleNamespace(train=SimpleNamespace(weight_decay=0.0))


def _batch(step: int, length: int) -> dict[str, torch.Tensor]:
    """A generated clip (1, T, 3, 32, 32): two textured squares drifting over a background;
    the video id alternates between two videos."""
    g = torch.Generator().manual_seed(1000 + step % 2)
    base = torch.randn(1, 3, 32, 32, generator=g) * 0.3
    frames = []
    for t in range(length):
        f = base.clone()
        f[:, 0, 4 + t : 14 + t, 4:14] += 2.0
        f[:, 2, 18:28, 16 + t : 26 + t] += 2.0
        frames.append(f)
    return {"frames": torch.stack(frames, 1), "video_id": torch.tensor([7 + step % 2])}


def _run(method: MaskVOS, steps: range, total: int, opt=None, batch=_batch):
    """The minimal loop of the plug-in seam: at a phase change start_phase, then
    make_optimizer; per step lr_at, loss, backward, optimizer step, after_step.
    Returns the optimizer and the logged loss terms."""
    share, log = method.config.corr_share, []
    for step in steps:
        phase = 0 if step < round(total * share) else 1
        if opt is None or phase != method.phase:
            method.start_phase(phase)
            opt = method.make_optimizer(PARAMS)
        for group in opt.param_groups:
            group["lr"] = method.lr_at(step, total, 0.0)
        length = method.config.clip_length_corr if phase == 0 else method.config.clip_length_mask
        out = method.loss(batch(step, length))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.after_step(step, total)
        log.append({k: float(v.detach()) for k, v in out.items()})
    return opt, log


@torch.no_grad()
def _measure(method: MaskVOS, batch: dict[str, torch.Tensor], labels: torch.Tensor | None = None) -> float:
    """The stage's loss on ``batch`` under fixed conditions: the Φ of step 0, and in the
    mask stage the given pseudo labels (B, T, h, w)."""
    count = method.step_count.clone()
    method.step_count.zero_()
    frames = batch["frames"]
    b, t = frames.shape[:2]
    feats = {k: v.reshape(b, t, *v.shape[1:]) for k, v in method.encoder_net.features(frames.flatten(0, 1)).items()}
    value = method.correspondence_total(method.correspondence_losses(frames, feats["key"]), None)
    if labels is not None:
        value = value + method.segmentation(frames, feats, labels)
    method.step_count.copy_(count)
    return float(value)


@pytest.mark.slow  # about 30 s on an idle 2-core CPU (two ResNet-18s and a decoder at stride 8)
def test_tiny_run_lowers_the_loss_in_each_stage():
    torch.manual_seed(0)
    method = MaskVOS(MaskVOSParams(**TINY, corr_share=0.5, recluster_steps=100))

    def fixed(step: int, length: int) -> dict[str, torch.Tensor]:
        return _batch(0, length)

    corr_batch, mask_batch = fixed(0, 5), fixed(0, 3)
    before = _measure(method, corr_batch)
    opt, log = _run(method, range(4), 8, batch=fixed)
    assert "seg" not in log[0] and _measure(method, corr_batch) < before
    method.start_phase(1)
    method.train()
    labels = method.pseudo_masks(method.encoder_net.features(mask_batch["frames"][0])["key"][None], mask_batch["video_id"])
    assert labels.unique().numel() >= 2  # background and at least one object
    before = _measure(method, mask_batch, labels)
    _, log = _run(method, range(4, 8), 8, opt=None, batch=fixed)
    assert "seg" in log[0] and log[0]["objects"] >= 1
    assert _measure(method, mask_batch, labels) < before


@pytest.mark.slow  # about 40 s on an idle 2-core CPU
def test_exact_resume_across_the_stage_switch_and_reclustering():
    torch.manual_seed(0)
    total, config = 5, MaskVOSParams(**TINY, corr_share=0.4, recluster_steps=2)  # switch at step 2
    full = MaskVOS(config)
    checkpoints: dict[int, tuple] = {}
    opt = None
    for step in range(total):
        if step in (1, 3):  # before the switch; inside the mask stage before the re-clustering at step 4
            checkpoints[step] = (_roundtrip(full.state_dict()), _roundtrip(opt.state_dict()), full.phase)
        opt, _ = _run(full, range(step, step + 1), total, opt)
    assert int(full.recluster_interval) == 2 and (full.clusters.stamp == 4).any() and (full.clusters.stamp == 3).any()
    for step, (state, opt_state, phase) in checkpoints.items():
        torch.manual_seed(123)  # a different initialisation, overwritten by the checkpoint
        resumed = MaskVOS(config)
        resumed.start_phase(phase)
        resumed.load_state_dict(torch.load(state, weights_only=True))
        opt = resumed.make_optimizer(PARAMS)
        opt.load_state_dict(torch.load(opt_state, weights_only=True))
        _run(resumed, range(step, total), total, opt)
        for key, value in full.state_dict().items():
            assert torch.equal(value, resumed.state_dict()[key]), (step, key)


def test_state_dict_holds_the_cluster_cache_and_step_counters():
    torch.manual_seed(0)
    config = MaskVOSParams(**TINY, recluster_steps=2)
    method = MaskVOS(config)
    method.start_phase(1)
    clip = _batch(0, 3)
    feats = method.encoder_net.features(clip["frames"][0])["key"][None].detach()
    first = method.pseudo_masks(feats, clip["video_id"])
    method.after_step(0, 10)
    state = torch.load(_roundtrip(method.state_dict()), weights_only=True)
    assert {"step_count", "recluster_interval", "clusters.centroids", "clusters.ids", "clusters.stamp"} <= set(state)
    resumed = MaskVOS(config)
    resumed.start_phase(1)
    resumed.load_state_dict(state)
    # cached: same labels without clustering again; two steps later both re-cluster alike
    assert torch.equal(resumed.pseudo_masks(feats, clip["video_id"]), first)
    for m in (method, resumed):
        m.step_count.fill_(2)
    assert torch.equal(method.pseudo_masks(feats, clip["video_id"]), resumed.pseudo_masks(feats, clip["video_id"]))
    assert int(method.clusters.stamp[method.clusters.slot(7)]) == 2


def test_published_numbers_are_the_papers():
    import yaml
    from pathlib import Path

    import hvc.methods.maskvos as pkg

    rows = yaml.safe_load((Path(pkg.__file__).parent / "published.yaml").read_text())
    assert {t: r[0]["published"][0] for t, r in rows.items()} == {"table1": 74.5, "table2": 71.6, "table9": 61.3}  # the harness's rows
    pub = yaml.safe_load((Path(pkg.__file__).parent / "published_sources.yaml").read_text())
    assert set(pub) == {"table1", "table2", "table9"}
    assert pub["table1"]["benchmarks"]["davis2017"] == {"JF_mean": 74.5, "J_mean": 71.6, "J_recall": 82.9, "F_mean": 77.4, "F_recall": 86.9}
    assert pub["table2"]["benchmarks"]["ytvos2018"]["overall"] == 71.6
    assert pub["table9"]["benchmarks"]["davis2017_testdev"]["JF_mean"] == 61.3
    assert all("Table" in row["source"] for row in pub.values())


def test_official_compare_script_names_a_bad_checkout(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "maskvos_official_compare.py"
    spec = importlib.util.spec_from_file_location("maskvos_official_compare", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit, match="not a checkout"):
        mod.main(["--official", str(tmp_path)])


def test_official_dul_losses():
    g = torch.Generator().manual_seed(0)
    index = grid_index(2, 8, 8, 4, g)
    assert index.shape == (2, 16) and (index >= 0).all() and (index < 64).all()
    assert len(set((index[0] % 8).tolist())) == 4 and len(set((index[0] // 8).tolist())) == 4
    keys = torch.nn.functional.normalize(torch.randn(2, 3, 16, 8, 8, generator=g), dim=2)
    # the same view twice: each point finds itself (small loss), a shuffled view does not
    assert dul_cross_view_loss(keys[:, 0], keys[:, 0], index, 0.05) < 0.1
    assert dul_cross_view_loss(keys[:, 0], keys[:, 0].roll(1, -1), index, 0.05) > 1.0
    anchors = grid_index(2, 8, 8, 8, g)
    # frames that repeat frame 0: every cell's best anchor is itself, the loss is small
    still = keys[:, :1].expand(-1, 3, -1, -1, -1)
    assert dul_temporal_loss(still, still, anchors, 0.05) < 0.1
    with pytest.raises(ValueError, match="multiples"):
        grid_index(1, 6, 8, 4)
    torch.manual_seed(0)
    method = MaskVOS(MaskVOSParams(size=64, corr_loss="official", batch_corr=1))
    out = method.loss(_batch(0, 5) | {"frames": torch.nn.functional.interpolate(_batch(0, 5)["frames"][0], size=64)[None]})
    assert set(out) == {"loss", "cross_key", "temp"} and torch.isfinite(out["loss"])
    assert torch.allclose(out["loss"], 0.1 * out["cross_key"] + out["temp"])
    with pytest.raises(ValueError, match="dul_grid"):
        MaskVOSParams(size=32, corr_loss="official")
