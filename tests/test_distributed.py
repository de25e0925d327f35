"""Several processes (issue 15, items 1-4): the learning rate follows the global batch the Trainer
runs, DDP validation with fewer batches than ranks finishes and scores like one process,
augmentations differ per rank and worker yet are reproducible, and mixed precision is decided the
same on every rank, with fp16 overflows skipped rather than fatal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from helpers import TINY_TRAIN, compose
from omegaconf import OmegaConf

from rcnn_cli.data.pipeline.datamodule import DetectionDataModule
from rcnn_cli.data.pipeline.dataset import ReseedWorker
from rcnn_cli.data.pipeline.sampler import GroupedBatchSampler
from rcnn_cli.model.factory import create_detector
from rcnn_cli.training.module import MAX_SKIPPED_FP16_STEPS, DetectorModule, NonFiniteLossError


def module_for(cfg, batch_size: int) -> DetectorModule:
    detector = create_detector(cfg.model, ["a", "b"])
    return DetectorModule(detector, cfg.optim, {}, batch_size=batch_size)


@pytest.mark.parametrize("devices, nodes, accumulate, world", [
    (2, 1, 1, 2), ("2", 1, 1, 2), (2, 2, 1, 4), (1, 1, 4, 1), (3, 1, 2, 3),
])
def test_learning_rate_follows_the_trainers_global_batch(devices, nodes, accumulate, world, tiny_cfg):
    """A real Trainer counts the processes; base_lr 0.02 per 16 images scales with all of them."""
    cfg = compose("optim=sgd", "dataset.batch_size=4", "model.min_size=64", "model.max_size=64")
    trainer = L.Trainer(accelerator="cpu", devices=devices, num_nodes=nodes, strategy="ddp" if world > 1 else "auto",
                        accumulate_grad_batches=accumulate, logger=False, enable_checkpointing=False)
    module = module_for(cfg, 4)
    module.trainer = trainer
    assert trainer.world_size == world
    assert module.global_batch() == 4 * world * accumulate
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.param_groups[0]["initial_lr"] == pytest.approx(0.02 * 4 * world * accumulate / 16)


@pytest.mark.parametrize("world", [2, 8])
def test_learning_rate_follows_gpu_device_lists(world):
    """devices=-1, auto, [0,1,..] or "0,1,.." on a GPU machine: the Trainer's world size is what counts."""
    cfg = compose("optim=sgd", "model.min_size=64", "model.max_size=64")
    module = module_for(cfg, 2)
    module.trainer = SimpleNamespace(world_size=world, accumulate_grad_batches=1, estimated_stepping_batches=10)
    assert module.global_batch() == 2 * world


def test_the_planned_process_count_reads_every_devices_form(monkeypatch):
    from rcnn_cli.training.trainer import planned_processes

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for devices, expected in ((4, 4), ("4", 4), ("0,1,2", 3), ([0, 1], 2), (1, 1)):
        assert planned_processes(OmegaConf.create({"devices": devices, "num_nodes": 2, "accelerator": "cpu"})) \
            == 2 * expected
    monkeypatch.setenv("WORLD_SIZE", "16")
    assert planned_processes(OmegaConf.create({"devices": 1, "num_nodes": 1, "accelerator": "cpu"})) == 16


def test_validation_pads_ranks_with_marked_copies_that_count_nowhere():
    """3 validation batches over 2 ranks: both run 2 steps; the extra one is marked padding."""
    landscape = [True] * 5
    ranks = [list(GroupedBatchSampler(landscape, 2, shuffle=False, rank=r, world_size=2, pad=False)) for r in (0, 1)]
    assert [len(r) for r in ranks] == [2, 2]
    real = sorted(i for batches in ranks for batch in batches for i in batch if i >= 0)
    assert real == [0, 1, 2, 3, 4]
    assert [i for batches in ranks for batch in batches for i in batch if i < 0] == [-1, -2]   # copies of 0 and 1


def test_two_processes_with_one_validation_batch_finish_and_score_like_one(tiny_run, tmp_path):
    """Fewer validation batches than ranks used to hang rank 0 forever in all_gather_object."""
    weights = str(tiny_run / "checkpoints" / "best.ckpt")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    results = {}
    for name, extra in (("one", []), ("two", ["trainer=ddp", "trainer.devices=2"])):
        args = [sys.executable, "-m", "rcnn_cli.cli", "eval", "--weights", weights, "--json", str(tmp_path / name),
                "--out", str(tmp_path / f"e-{name}"), "dataset.batch_size=64", "trainer.accelerator=cpu", *extra]
        out = subprocess.run(args, capture_output=True, text=True, cwd=tiny_run.parent.parent, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        results[name] = json.loads((tmp_path / name).read_text())
    assert results["one"] == results["two"]


def test_augmentations_differ_per_rank_and_repeat_with_the_seed(tiny_cfg):
    def first_batch(rank: int, seed: int) -> torch.Tensor:
        cfg = compose(*TINY_TRAIN, f"seed={seed}", "augment.color_jitter=0.4", "augment.hflip=0.5")
        datamodule = DetectionDataModule(cfg)
        datamodule.trainer = SimpleNamespace(global_rank=rank, world_size=1, accelerator=None)
        images, _ = next(iter(datamodule.train_dataloader()))
        return torch.stack([image.float().mean((1, 2)) for image in images])

    assert torch.equal(first_batch(0, 1), first_batch(0, 1))
    assert not torch.equal(first_batch(0, 1), first_batch(1, 1))


def test_worker_seeds_differ_per_rank_and_worker(monkeypatch):
    import rcnn_cli.data.pipeline.dataset as dataset_module

    seeds = {}
    for rank in (0, 1):
        for worker in (0, 1):
            transform = SimpleNamespace(set_random_seed=lambda s, key=(rank, worker): seeds.__setitem__(key, s))
            monkeypatch.setattr(dataset_module, "get_worker_info",
                                lambda t=transform: SimpleNamespace(dataset=SimpleNamespace(transform=t)))
            torch.manual_seed(1000 + worker)       # torch gives each worker base seed + worker id
            ReseedWorker(rank)(worker)
    assert len(set(seeds.values())) == 4


def test_mixed_precision_is_not_timed_per_rank_when_there_are_several(monkeypatch):
    from rcnn_cli import hardware

    def timing(device_type: str = "cpu") -> float:
        raise AssertionError("a multi-process run must not time bf16 per rank")

    monkeypatch.setattr(hardware, "bf16_speedup", timing)
    monkeypatch.setattr(hardware, "has_native_bf16", lambda: True)
    assert hardware.training_autocast_dtype("cpu", processes=2) == torch.bfloat16
    monkeypatch.setattr(hardware, "has_native_bf16", lambda: False)
    assert hardware.training_autocast_dtype("cpu", processes=4) is None


class Overflowing(torch.nn.Module):
    """A model whose box loss overflowed to inf (what fp16 does past 65504)."""

    def forward(self, images, targets):
        return {"loss_box_reg": torch.tensor(float("inf")), "loss_classifier": torch.tensor(0.5)}


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed", "32-true"])
def test_an_fp16_overflow_skips_the_step_and_other_precisions_stop(precision):
    cfg = compose("model.min_size=64", "model.max_size=64")
    module = module_for(cfg, 1)
    module.trainer = SimpleNamespace(precision=precision, global_step=0)
    module.model = Overflowing()
    batch = ([torch.zeros(3, 8, 8)], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "index": 0}])
    if precision != "16-mixed":
        with pytest.raises(NonFiniteLossError, match="loss_box_reg"):
            module.training_step(batch, 0)
        return
    assert all(module.training_step(batch, 0) is None for _ in range(MAX_SKIPPED_FP16_STEPS - 1))
    with pytest.raises(NonFiniteLossError):          # a run of overflows is divergence, not bad luck
        module.training_step(batch, 0)


def test_multi_scale_min_size_trains_and_evaluates_from_the_cli_config():
    """model.min_size=[96,128] arrives as a ListConfig: one size drawn per training batch, the last in eval."""
    cfg = compose("model.min_size=[96,128]", "model.max_size=160", "model.num_classes=3")
    model = create_detector(cfg.model).model
    assert model.transform.min_size == (96, 128)
    image = torch.rand(3, 100, 120)
    model.train()
    losses = model([image], [{"boxes": torch.tensor([[10.0, 10, 50, 50]]), "labels": torch.tensor([1])}])
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        batch = model.transform([image])
    assert min(batch.image_sizes[0]) == 128


def test_np_seed_mixing_is_stable():
    from rcnn_cli.data.pipeline.dataset import stream_seed

    assert stream_seed(0, 1) == stream_seed(0, 1) != stream_seed(0, 2)
    assert 0 <= stream_seed(2**40, 3) < 2**32 and isinstance(stream_seed(1, 1), int)
    assert np.uint32(stream_seed(5, 0)) == stream_seed(5, 0)
