r"""Neural style transfer (Gatys et al.) through the generic train step.

Defaults: scikit-image's bundled ``chelsea`` (content) and ``immunohistochemistry``
(a stained-tissue texture, style) at 256 px on the longer side, a random-weight
VGG-19 with average pooling (no pretrained weights offline), Adam on the pixels.

Run (only the workdir is needed):

  python experiments/stylize.py --config=configs/style_transfer.py --workdir=/tmp/style

Your own images, pretrained VGG-19 weights (docs/style_transfer.md), L-BFGS:

  python experiments/stylize.py --config=configs/style_transfer.py \
    --config.content=me.jpg --config.style=starry.jpg,scream.jpg \
    --config.style_blend_weights=0.7,0.3 --config.network.weights=vgg19.safetensors \
    --config.optimizer.name=lbfgs --config.optimizer.learning_rate=1 --workdir=/tmp/style

Expected (random-weight VGG-19, 300 Adam iterations): the style cost falls by well
over 100x from its value at the content image (measured: 418x for chelsea at 170x256,
1232x for --config.content=skimage:astronaut at 256x256) while the content cost stays
below (style_weight / content_weight) x the initial style cost; the panel shows the
subject re-coloured in the stain's brown/white/blue-grey palette with its cell-outline
texture. About 2 s per iteration on a 2-core CPU. Details in docs/style_transfer.md.

Smoke variant (seconds; what the tests run): ``configs/style_transfer.py:smoke``.
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.content = "skimage:chelsea"  # a path, skimage:<name>, or several comma-separated
    config.style = "skimage:immunohistochemistry"  # one or several comma-separated
    config.style_blend_weights = ""  # e.g. "0.7,0.3"; equal when empty
    config.pair_styles = False  # content i takes style i (a batch of pairs)
    config.image_size = 256  # longer side of the content image(s)
    config.style_scale = 1.0  # style image side relative to the content's
    config.preserve_color = False  # luminance-only transfer in YUV (raise style_weight, ~1000)
    config.num_scales = 1  # coarse-to-fine: each extra scale halves the first size
    config.init = "content"  # 'content' | 'noise' | 'mix'
    config.init_noise_ratio = 0.5  # for 'mix'

    config.network = ml_collections.ConfigDict(
        {"arch": "vgg19", "pool": "avg", "weights": "", "seed": 0}
    )
    config.content_layers = ml_collections.ConfigDict({"relu4_2": 1.0})
    config.style_layers = ml_collections.ConfigDict({f"relu{i}_1": 0.2 for i in range(1, 6)})
    config.normalization = "course"  # 'course' | 'gatys' | 'pytorch'
    config.content_weight = 1.0  # alpha
    config.style_weight = 10.0  # beta
    config.tv_weight = 0.0  # gamma, on the per-pixel total variation
    config.tv_kind = "squared"

    # 'adam' (or any convjax.train.optimizers name) or 'lbfgs'; memory_size and
    # max_step (largest pixel change per iteration) are L-BFGS's.
    config.optimizer = ml_collections.ConfigDict(
        {
            "name": "adam",
            "learning_rate": 0.02,
            "schedule": "constant",
            "memory_size": 10,
            "max_step": 0.05,
        }
    )
    config.num_train_steps = 300  # iterations per scale
    config.parallel = "auto"  # 'auto' | 'jit' | 'pmap' | 'shard_map'
    config.seed = 0
    config.log_every_steps = 10  # a progress line every N iterations
    config.checkpoint_every_steps = 100  # and at the end of every scale
    config.keep_checkpoints = 2
    config.save_every_steps = 0  # write the image every N iterations (0: never)

    if common.parse_arg(arg, smoke=False).smoke:
        config.image_size = 48
        config.num_train_steps = 20
        config.network.arch = "vgg16"
        config.style_layers = ml_collections.ConfigDict({"relu1_1": 0.5, "relu2_1": 0.5})
        config.content_layers = ml_collections.ConfigDict({"relu3_1": 1.0})
        config.log_every_steps = 5
    return config
