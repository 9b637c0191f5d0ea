"""Check the imported google/ffn model against TensorFlow's own graph math (needs TensorFlow).

TensorFlow is never a project dependency. Install it in a throwaway venv and point ``--tf-python`` at
it::

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu
    .venv/bin/python benchmarks/compare_tf_forward.py --tf-python /tmp/tfvenv/bin/python

The TF side reads the checkpoint with ``tf.train.load_checkpoint`` (TensorFlow's reader, independent of
ours) and runs google/ffn's ``ConvStack3DFFNModel`` math with ``tf.nn.conv3d`` (NDHWC); the torch side
imports the same checkpoint with our pure-Python reader and runs :func:`load_model`. Both get the same
random image and seed logits. Prints one JSON line with the max abs difference of the output logits.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = ROOT.parent / "shared" / "data" / "google-ffn-fib25" / "model.ckpt-27465036"

# Runs inside the TensorFlow venv: google/ffn convstack_3d._predict_object_mask + update_seed.
TF_PROGRAM = r"""
import sys, numpy as np, tensorflow as tf
ckpt, inp, out = sys.argv[1:4]
r = tf.train.load_checkpoint(ckpt)
v = lambda n: tf.constant(r.get_tensor('seed_update/' + n))
depth = 1
while r.has_tensor('seed_update/conv%d_a/weights' % depth):
    depth += 1
d = np.load(inp)
image, seed = tf.constant(d['image']), tf.constant(d['seed'])   # NDHWC
def conv(x, scope, relu=True):
    y = tf.nn.bias_add(tf.nn.conv3d(x, v(scope + '/weights'), [1] * 5, 'SAME'), v(scope + '/biases'))
    return tf.nn.relu(y) if relu else y
net = tf.concat([image, seed], 4)
net = conv(net, 'conv0_a')
net = conv(net, 'conv0_b', relu=False)
for i in range(1, depth):
    skip = net
    net = conv(tf.nn.relu(net), 'conv%d_a' % i)
    net = conv(net, 'conv%d_b' % i, relu=False) + skip
logits = conv(tf.nn.relu(net), 'conv_lom', relu=False)
np.save(out, (seed + logits).numpy())
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tf-python", default="/tmp/tfvenv/bin/python")
    ap.add_argument("--checkpoint", default=str(DEFAULT_CKPT))
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()

    import torch

    from napari_connectome.ffn.checkpoint import import_google_checkpoint, load_model

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        import_google_checkpoint(args.checkpoint, tmp / "model")
        model, cfg = load_model(tmp / "model")
        shape = (args.batch, *cfg.fov_size, 1)
        # a realistic input: normalised EM-like noise, and Google's initial seed canvas
        image = ((rng.integers(0, 256, shape) - cfg.image_mean) / cfg.image_stddev).astype(
            np.float32
        )
        p = np.full(shape, cfg.inference.pad_value, np.float32)
        c = tuple(s // 2 for s in cfg.fov_size)
        p[:, c[0], c[1], c[2], 0] = cfg.inference.init_activation
        seed = np.log(p / (1 - p)).astype(np.float32)
        np.savez(tmp / "in.npz", image=image, seed=seed)
        subprocess.run(
            [
                args.tf_python,
                "-c",
                TF_PROGRAM,
                args.checkpoint,
                str(tmp / "in.npz"),
                str(tmp / "o.npy"),
            ],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        tf_out = np.load(tmp / "o.npy")[..., 0]
        with torch.no_grad():
            to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a[..., 0][:, None]))  # noqa: E731
            torch_out = model(to_t(image), to_t(seed))[:, 0].numpy()
    diff = np.abs(tf_out - torch_out)
    print(
        json.dumps(
            {
                "figure": "google_fib25_tf_vs_torch_forward",
                "max_abs_diff_logits": float(diff.max()),
                "mean_abs_diff_logits": float(diff.mean()),
                "logit_range": [float(tf_out.min()), float(tf_out.max())],
                "fov": list(cfg.fov_size),
                "batch": args.batch,
            }
        )
    )
    sys.exit(0 if diff.max() < 1e-3 else 1)


if __name__ == "__main__":
    main()
