"""gan_jax.inception against pytorch-fid: the same random weights through pytorch-fid's own InceptionV3 forward.

The reference network is pytorch-fid's FID InceptionV3, built as `pytorch_fid.inception.fid_inception_v3` builds it
(torchvision's Inception3 with 1008 classes, no aux logits, the FIDInceptionA/C/E_1/E_2 blocks swapped in), given
random weights and batch-norm statistics measured on random images and then perturbed (so every BN's running
mean and variance matter). Its state_dict is saved in torch's legacy format without `num_batches_tracked`, like
pytorch-fid's real release, into a private torch.hub directory under the real file name: pytorch-fid's
`InceptionV3([3], resize_input=True, normalize_input=True)` then loads it through its own code path (the hub cache
is found, nothing is downloaded) and is the reference for the pool features, and pool · Wᵀ for the logits
(torch-fidelity's `logits_unbiased`). gan_jax reads the same file with `inception.load`.
"""

import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from torch_reference import pytorch_fid, torch

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from gan_jax import inception  # noqa: E402
from gan_jax.errors import GanJaxError  # noqa: E402

F = torch.nn.functional
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fid_network() -> torch.nn.Module:
    """pytorch-fid's FID InceptionV3 (as fid_inception_v3 builds it, without its download) with random weights."""
    torch.manual_seed(0)
    fid = pytorch_fid.inception
    net = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fid.FIDInceptionE_1(1280)
    net.Mixed_7c = fid.FIDInceptionE_2(2048)
    assert not net.transform_input
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in norms:  # random affine; running statistics measured on one batch (momentum None: their mean)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
            bn.reset_running_stats()
            bn.momentum = None
        net.train()(torch.rand(2, 3, 299, 299) * 2 - 1)
        for bn in norms:  # then off by a random few percent, so eval-mode BN is not the batch's normalisation
            bn.running_mean.add_(0.1 * bn.running_var.sqrt() * torch.randn_like(bn.running_mean))
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.8, 1.25))
    return net.eval()


def pytorch_fid_model(directory) -> tuple[torch.nn.Module, str, dict[str, torch.Tensor]]:
    """(pytorch-fid's InceptionV3([3], resize_input=True, normalize_input=True) in eval mode over random weights,
    the weights file it loaded, its state_dict): the file is `directory`/checkpoints/<the real name>, in torch's
    legacy format without num_batches_tracked like the real release, found there by torch.hub (no download)."""
    os.makedirs(os.path.join(directory, "checkpoints"), exist_ok=True)
    path = os.path.join(directory, "checkpoints", inception.WEIGHTS_FILE)
    state = {k: v for k, v in _fid_network().state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(directory))
    try:
        model = pytorch_fid.inception.InceptionV3([3], resize_input=True, normalize_input=True).eval()
    finally:
        torch.hub.set_dir(previous)
    return model, path, state


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(pytorch-fid's InceptionV3 over random weights, its weights file, the fc weight as NumPy)."""
    model, path, state = pytorch_fid_model(tmp_path_factory.mktemp("torch_hub"))
    return model, path, state["fc.weight"].numpy()


@pytest.fixture(scope="module")
def params(reference):
    return inception.load(reference[1], sha256=None)


@pytest.fixture(scope="module")
def extract(params):
    """The extractor over the 4 simulated devices (tests/conftest.py), batch 2 → 4: two rows of padding per call."""
    assert len(jax.local_devices()) == 4
    return inception.make_extractor(params, batch_size=2)


def _relative_error(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


@pytest.mark.parametrize("size", [32, 64, 299])
def test_features_equal_pytorch_fid(reference, params, extract, size):
    """Pool features and unbiased logits of random [0, 1] images (ours fed 2x − 1), max |a − b| / max |b| < 1e-4
    (reached on an AMD EPYC: pool ≤ 7e-7 at 32² and 64², ≤ 6e-6 at 299²; logits ≤ 1.5e-6 and ≤ 7e-6)."""
    model, _, fc_weight = reference
    images = np.random.default_rng(size).uniform(0, 1, (2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        pool_torch = model(torch.from_numpy(images).permute(0, 3, 1, 2))[0].flatten(1).numpy()
    pool, logits = extract(2 * images - 1)
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    assert np.std(pool_torch) > 1e-2  # the random network's features are not degenerate
    assert _relative_error(pool, pool_torch) < 1e-4
    assert _relative_error(logits, pool_torch @ fc_weight.T) < 1e-4
    classifier = logits + params["params"]["fc"]["bias"]  # the fc layer's own output: pool · Wᵀ + b
    with torch.no_grad():
        fc = torch.nn.functional.linear(torch.from_numpy(pool_torch), torch.from_numpy(fc_weight),
                                        torch.from_numpy(np.array(params["params"]["fc"]["bias"])))
    assert _relative_error(classifier, fc.numpy()) < 1e-4


@pytest.mark.parametrize("shape_in, shape_out", [((8, 8), (299, 299)), ((32, 20), (299, 299)),
                                                 ((512, 400), (299, 299)), ((7, 13), (5, 9)), ((299, 299), (299, 299))])
def test_resize_equals_torch_interpolate(shape_in, shape_out):
    """Bilinear, align_corners=False, no antialias: up, down, mixed and identity."""
    x = np.random.default_rng(0).normal(size=(2, *shape_in, 3)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=shape_out, mode="bilinear",
                             align_corners=False).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(inception.resize(jnp.asarray(x), shape_out), expected, rtol=0, atol=2e-6)


def test_resize_weights_equal_torch_bitwise():
    """resize_matrix(n, m) is F.interpolate of the n unit impulses, bit for bit (torch rounds s = σ(i + ½) − ½ once)."""
    for size_in, size_out in [(32, 299), (512, 299), (77, 299), (13, 9), (8, 5)]:
        impulses = torch.eye(size_in).reshape(size_in, 1, size_in, 1).expand(size_in, 1, size_in, 2).contiguous()
        torch_weights = F.interpolate(impulses, size=(size_out, 2), mode="bilinear", align_corners=False)
        np.testing.assert_array_equal(inception.resize_matrix(size_in, size_out), torch_weights[:, 0, :, 0].T.numpy())


def test_features_refuse_other_shapes(params, extract):
    for refuse in (lambda x: inception.features(params, jnp.asarray(x)), extract):
        with pytest.raises(GanJaxError, match=r"\(n, height, width, 3\), got \(2, 32, 32, 1\).*jnp.repeat"):
            refuse(np.zeros((2, 32, 32, 1), np.float32))


def test_extractor_batches_pads_and_drops_padding(extract):
    """5 images = one full batch of 4 and one padded with 3 rows; a row's features do not depend on its batch."""
    images = np.random.default_rng(1).uniform(-1, 1, (5, 16, 16, 3)).astype(np.float32)
    pool, logits = extract(images)
    assert pool.shape == (5, 2048) and logits.shape == (5, 1008)
    shifted_pool, shifted_logits = extract(images[1:])  # one full batch: every image in another row and batch
    np.testing.assert_allclose(shifted_pool, pool[1:], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(shifted_logits, logits[1:], rtol=1e-6, atol=1e-6)
    assert not np.allclose(pool[0], pool[1])
    assert extract(images[:0])[0].shape == (0, 2048)


def test_load_reads_both_torch_formats(reference, params, tmp_path):
    """The zip format (torch >= 1.6, with num_batches_tracked) gives the same arrays as the legacy file."""
    state = torch.load(reference[1], weights_only=True)
    state["Conv2d_1a_3x3.bn.num_batches_tracked"] = torch.tensor(3)
    torch.save(state, tmp_path / "zip.pth")
    again = inception.load(str(tmp_path / "zip.pth"), sha256=None)
    jax.tree.map(np.testing.assert_array_equal, again, params)
    # The layout conversion, checked on two leaves against torch's tensors directly.
    np.testing.assert_array_equal(again["params"]["Mixed_7c"]["branch3x3_2a"]["conv"]["kernel"],
                                  state["Mixed_7c.branch3x3_2a.conv.weight"].permute(2, 3, 1, 0).numpy())
    np.testing.assert_array_equal(again["batch_stats"]["Mixed_6b"]["branch7x7dbl_4"]["bn"]["var"],
                                  state["Mixed_6b.branch7x7dbl_4.bn.running_var"].numpy())


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("Mixed_6e.branch_pool.bn.running_var"), "1 missing key.*Mixed_6e.branch_pool.bn.running_var"),
    (lambda s: s.__setitem__("AuxLogits.fc.weight", torch.zeros(3)), "1 unexpected key.*AuxLogits.fc.weight"),
    (lambda s: s.__setitem__("fc.weight", torch.zeros(1000, 2048)), r"fc.weight is float32 \(1000, 2048\).*"
                                                                    r"needs float \(1008, 2048\)"),
])
def test_load_refuses_other_state_dicts(reference, tmp_path, change, message):
    state = torch.load(reference[1], weights_only=True)
    change(state)
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(GanJaxError, match=message):
        inception.load(str(tmp_path / "other.pth"), sha256=None)


def test_load_refuses_pickled_objects(tmp_path):
    """A whole module saved with torch.save(model) instead of its state_dict is refused, its class never built."""
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")
    with pytest.raises(GanJaxError, match=r"needs torch.nn.modules.linear.Linear.*model.state_dict\(\)"):
        inception.load(str(tmp_path / "module.pth"), sha256=None)


def test_load_checks_the_digest(reference):
    path = reference[1]
    with open(path, "rb") as f:
        actual = hashlib.sha256(f.read()).hexdigest()
    assert inception.file_sha256(path) == actual
    with pytest.raises(GanJaxError) as error:
        inception.load(path)  # random weights: not pytorch-fid's file
    assert actual in str(error.value) and inception.WEIGHTS_SHA256 in str(error.value)
    assert inception.WEIGHTS_SHA256.startswith("6726825d")  # the prefix pytorch-fid's file name carries
    inception.load(path, sha256=actual.upper())


def test_missing_file_says_where_to_get_and_put_it(tmp_path):
    with pytest.raises(GanJaxError) as error:
        inception.load(str(tmp_path / "absent.pth"))
    message = str(error.value)
    assert "\n" not in message and "absent.pth" in message
    for part in (inception.WEIGHTS_URL, "config.eval.inception_weights", "$GAN_JAX_INCEPTION_WEIGHTS"):
        assert part in message
    assert inception.WEIGHTS_URL.endswith("/fid_weights/pt_inception-2015-12-05-6726825d.pth")


def test_weights_path(monkeypatch):
    monkeypatch.setenv(inception.WEIGHTS_ENV, "/from/env.pth")
    assert inception.weights_path("/from/config.pth") == "/from/config.pth"
    assert inception.weights_path(None) == "/from/env.pth"
    monkeypatch.delenv(inception.WEIGHTS_ENV)
    with pytest.raises(GanJaxError, match="GAN_JAX_INCEPTION_WEIGHTS"):
        inception.weights_path("")


def test_load_never_imports_torch(reference):
    code = textwrap.dedent(f"""
        import sys
        import gan_jax.inception as i
        params = i.load({reference[1]!r}, sha256=None)
        assert params["params"]["fc"]["kernel"].shape == (2048, 1008)
        assert not any(name == "torch" or name.startswith("torch.") for name in sys.modules), "torch imported"
    """)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
