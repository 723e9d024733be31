"""Classification with localization, and landmark regression.

The course's output vector for one image is ``y = (p_c, b_x, b_y, b_h, b_w, c_1, ..., c_n)``:
``p_c`` says whether there is an object, ``(b_x, b_y)`` is its centre and ``(b_h, b_w)``
its height and width (normalised to the image), ``c_i`` its class. When there is no
object only ``p_c`` is learned: the box and class terms are multiplied by ``p_c*``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def localization_loss(
    outputs: jax.Array,
    has_object: jax.Array,
    box: jax.Array,
    label: jax.Array,
    *,
    box_weight: float = 5.0,
) -> dict[str, jax.Array]:
    """Per-example loss terms of the localization output vector.

    Args:
      outputs: [B, 5 + n] raw (p_c logit, b_x, b_y, b_h, b_w, class logits).
      has_object: [B] 1 when the image holds an object, else 0.
      box: [B, 4] target ``(b_x, b_y, b_h, b_w)``; ignored where ``has_object`` is 0.
      label: [B] int target class; ignored where ``has_object`` is 0.
      box_weight: weight of the squared box error against the two cross-entropies.

    Returns:
      ``{'object': [B], 'box': [B], 'class': [B], 'loss': [B]}``: logistic loss of ``p_c``,
      squared error of the box and softmax cross-entropy of the class, the last two
      multiplied by ``has_object``.
    """
    if outputs.ndim != 2 or outputs.shape[-1] < 6:
        raise ValueError(
            f"localization outputs must be [B, 5 + num_classes]; got {tuple(outputs.shape)}"
        )
    present = has_object.astype(jnp.float32)
    object_term = optax.sigmoid_binary_cross_entropy(outputs[:, 0], present)
    box_term = box_weight * present * jnp.sum((outputs[:, 1:5] - box) ** 2, axis=-1)
    class_term = present * optax.softmax_cross_entropy_with_integer_labels(
        outputs[:, 5:], label.astype(jnp.int32)
    )
    return {
        "object": object_term,
        "box": box_term,
        "class": class_term,
        "loss": object_term + box_term + class_term,
    }


def landmark_loss(
    predicted: jax.Array, target: jax.Array, visible: jax.Array | None = None
) -> jax.Array:
    """Mean squared distance between landmark points, per example.

    Args:
      predicted: [B, K, 2] normalised points; target: [B, K, 2].
      visible: optional [B, K] (or [B]) weights, 0 for landmarks without a label.

    Returns:
      [B]: the sum of squared coordinate errors over visible landmarks divided by their
      number (0 for an example with none).
    """
    if predicted.shape != target.shape or predicted.ndim != 3 or predicted.shape[-1] != 2:
        raise ValueError(
            f"landmarks must be [B, K, 2] and match; got {tuple(predicted.shape)} "
            f"and {tuple(target.shape)}"
        )
    squared = jnp.sum((predicted - target) ** 2, axis=-1)  # [B, K]
    if visible is None:
        return jnp.mean(squared, axis=-1)
    weight = jnp.broadcast_to(
        visible.reshape(visible.shape + (1,) * (2 - visible.ndim)), squared.shape
    ).astype(jnp.float32)
    count = jnp.sum(weight, axis=-1)
    return jnp.sum(weight * squared, axis=-1) / jnp.maximum(count, 1.0)
