"""--init-from: a new run from another run's G, D and EMA (step 0, fresh optimizers, its own folder), other classes
(label layers re-initialised, said in one line), incompatible shapes named, FreezeD, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fastgan.cli import main
from fastgan.config import load_config
from fastgan.data import ImageDataset, load_dataset
from fastgan.engine.build import assemble
from fastgan.engine.checkpoint import load_checkpoint
from fastgan.engine.fast import FastOptions
from fastgan.engine.finetune import freeze_d

CPU = torch.device("cpu")
SHAPE = {"model.g_width": "8", "model.d_width": "8", "model.z_dim": "16"}
TINY = ["--set", "model.g_width=8", "--set", "model.d_width=8", "--set", "model.z_dim=16", "--batch-size", "16",
        "--set", "train.grid_size=20", "--set", "train.log_every=2", "--set", "train.sample_every=2",
        "--set", "train.ckpt_every=2", "--set", "optim.ema_start=0", "--quiet"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A conditional digits run (10 classes) trained 4 steps: its checkpoint differs from any fresh init."""
    run = tmp_path_factory.mktemp("src") / "digits"
    assert main(["train", "--steps", "4", "--out", str(run), *TINY]) == 0
    return run / "checkpoints" / "step-0000004.pt"


def three_classes() -> ImageDataset:
    """Another dataset at the same resolution and channels with 3 classes (at 32 px like the digits run)."""
    g = torch.Generator().manual_seed(0)
    return ImageDataset(torch.randint(0, 256, (64, 1, 32, 32), dtype=torch.uint8, generator=g),
                        torch.arange(64) % 3, 3, ["a", "b", "c"], "three")


def files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_a_new_run_starts_from_the_source_weights(source, capsys):
    ckpt = load_checkpoint(source)
    cfg = load_config(None, {**SHAPE, "train.init_from": str(source)})
    run = assemble(cfg, load_dataset(cfg.data), CPU, options=FastOptions())
    st = run.state
    assert st.step == 0 and not st.opt_g.state and not st.opt_d.state  # new counter, fresh optimizers
    for name, model in (("G", st.G), ("D", st.D), ("G_ema", st.G_ema)):
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, ckpt["models"][name][k], rtol=0, atol=0, msg=f"{name}.{k}")
    assert not torch.equal(ckpt["models"]["G"]["net.0.weight"], ckpt["models"]["G_ema"]["net.0.weight"])
    err = capsys.readouterr().err
    assert f"fine-tuning from {source} (step 4 of digits-cdcgan)" in err and "re-initialised" not in err


def test_other_classes_reinitialise_only_the_label_parts(source, capsys):
    ckpt = load_checkpoint(source)["models"]
    cfg = load_config(None, {**SHAPE, "train.init_from": str(source)})
    run = assemble(cfg, three_classes(), CPU, options=FastOptions())
    fresh = assemble(load_config(None, SHAPE), three_classes(), CPU, options=FastOptions()).state
    G, D = run.state.G.state_dict(), run.state.D.state_dict()
    z = 16
    torch.testing.assert_close(G["net.0.weight"][:z], ckpt["G"]["net.0.weight"][:z])  # z rows: the source's
    torch.testing.assert_close(G["net.0.weight"][z:], fresh.G.state_dict()["net.0.weight"][z:])  # labels: fresh
    assert G["net.0.weight"].shape[0] == z + 3
    torch.testing.assert_close(D["features.0.weight"][:, :1], ckpt["D"]["features.0.weight"][:, :1])
    torch.testing.assert_close(D["features.0.weight"][:, 1:], fresh.D.state_dict()["features.0.weight"][:, 1:])
    torch.testing.assert_close(D["head.weight"], ckpt["D"]["head.weight"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "fine-tuning" in ln]
    assert len(lines) == 1
    assert "label layers re-initialised for 3 classes (the source had 10): G.net.0.weight, D.features.0.weight" \
        in lines[0]


def test_unconditional_to_acgan_keeps_the_image_part(source):
    cfg = load_config(None, {**SHAPE, "train.init_from": str(source), "model.conditioning": "acgan"})
    run = assemble(cfg, three_classes(), CPU, options=FastOptions())
    src = load_checkpoint(source)["models"]["D"]
    D = run.state.D.state_dict()
    assert D["features.0.weight"].shape[1] == 1  # no label planes: the source's image channel only
    torch.testing.assert_close(D["features.0.weight"], src["features.0.weight"][:, :1])
    assert D["aux.weight"].shape[0] == 3


def test_cli_finetune_writes_a_new_run_and_leaves_the_source_alone(source, tmp_path, capsys):
    src_dir = source.parent.parent
    before = files(src_dir)
    out = tmp_path / "ft"
    assert main(["train", "--init-from", str(source), "--out", str(out), "--steps", "2", "--set",
                 "train.freeze_d=1", "--quiet", "--batch-size", "16", "--set", "train.grid_size=20"]) == 0
    assert files(src_dir) == before
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["init_from"] == str(source) and saved["train"]["freeze_d"] == 1
    assert (saved["model"]["z_dim"], saved["model"]["g_width"]) == (16, 8)  # the source's shape, not the preset's
    assert load_checkpoint(out / "checkpoints" / "step-0000002.pt")["step"] == 2


def test_out_into_the_source_run_is_refused(source, capsys):
    src_dir = source.parent.parent
    before = files(src_dir)
    for out in (src_dir, src_dir / "finetune"):
        rc = main(["train", "--init-from", str(source), "--out", str(out), "--steps", "2", "--quiet"])
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert rc == 2 and len(err) == 1 and "never writes into its source" in err[0], err
    assert files(src_dir) == before


def test_incompatible_shape_names_the_layer(source, tmp_path, capsys):
    rc = main(["train", "--init-from", str(source), "--out", str(tmp_path / "x"), "--set", "model.g_width=16",
               "--steps", "2", "--quiet"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1, err
    assert "layer G.net.0.weight is (26, 32, 4, 4) in the checkpoint but (26, 64, 4, 4) in this model" in err[0]
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_init_from_and_resume_together_are_refused(source, capsys):
    rc = main(["train", "--init-from", str(source), "--resume", "auto", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--init-from starts a new run" in err[0]


@pytest.mark.parametrize("opts", [FastOptions(), FastOptions(channels_last=True)])  # reference and fast G step
def test_freeze_d_keeps_the_first_blocks_still(opts):
    cfg = load_config(None, {**SHAPE, "train.batch_size": "16", "train.freeze_d": "2"})
    run = assemble(cfg, load_dataset(cfg.data), CPU, options=opts)
    D = run.state.D
    before = {n: p.detach().clone() for n, p in D.named_parameters()}
    for _ in range(2):
        run.stepper(None, 0.99)
    moved = {n for n, p in D.named_parameters() if not torch.equal(p, before[n])}
    frozen = {n for n, p in D.named_parameters() if not p.requires_grad}
    # block 1: the first conv; block 2: the second conv and its BatchNorm's affine parameters
    assert frozen == {"features.0.weight", "features.0.bias", "features.2.weight", "features.3.weight",
                      "features.3.bias"}
    assert not moved & frozen and moved == set(before) - frozen


def test_freeze_d_beyond_the_blocks_is_one_line(capsys):
    cfg = load_config(None, SHAPE)
    D = assemble(cfg, load_dataset(cfg.data), CPU, options=FastOptions()).state.D
    assert freeze_d(D, 0) == 3
    rc = main(["train", "--set", "train.freeze_d=4", "--steps", "1", "--quiet", *TINY[:6]])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and "train.freeze_d: 4 (this D has 3 blocks" in err[0], err


def test_missing_source_is_one_line(tmp_path, capsys):
    rc = main(["train", "--init-from", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x"), "--dry-run"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and "nope.pt does not exist" in err[0], err
    assert not (tmp_path / "x").exists()


def test_d_shape_options_are_taken_from_the_source_run(tmp_path):
    """A source run with a spectrally normalised D and minibatch stddev: `--init-from` builds the same D (its
    parametrized weights and the wider head load) though the fine-tune's own flags left both at their defaults."""
    src, ft = tmp_path / "sn", tmp_path / "ft"
    assert main(["train", "--steps", "2", "--out", str(src), *TINY, "--set", "model.d_norm=spectral",
                 "--set", "model.d_mbstd=true"]) == 0
    ckpt = src / "checkpoints" / "step-0000002.pt"
    assert main(["train", "--steps", "2", "--init-from", str(ckpt), "--out", str(ft), *TINY]) == 0
    model = json.loads((ft / "config.json").read_text())["model"]
    assert model["d_norm"] == "spectral" and model["d_mbstd"] is True
    d = load_checkpoint(ft / "checkpoints" / "step-0000002.pt")["models"]["D"]
    assert d["head.parametrizations.weight.original"].shape[1] == 8 * 4 + 1  # 4x width, plus the stddev map
