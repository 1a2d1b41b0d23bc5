"""Training augmentation: a batch of stored uint8 images to augmented model input.

:func:`augment_batch` is the training path, :func:`to_model_input` the deterministic
one that evaluation (and ``augment="none"``) uses; both end in the same channel
conversion and scaling to [-1, 1] (described in :mod:`inception_keras.data`), so
they live together.

Augmentation, training split only (validation, test and ``eval_dataset("train")``
are never augmented and come in the same order on every pass):

* ``flip_crop``: horizontal flip and the CIFAR-style pad-and-random-crop (up to
  ``image_size // 8`` pixels of zero padding on each side);
* ``inception``: the paper's random-resized crop (8%..100% of the area, aspect
  ratio 3/4..4/3), horizontal flip, and TF-Slim's photometric distortions
  (brightness +-32/255, saturation and contrast x0.5..1.5, hue +-0.2, hue and
  saturation for RGB only); the paper's random interpolation methods are not
  reproduced (bilinear only);
* ``auto``: ``flip_crop`` when the source's images are at most 64 px, else ``inception``
  (resolved by :func:`~inception_keras.data.load_data`);
* ``none``: training images equal the evaluation images (only the order differs).

Crops, flips and resizing are one vectorised ``tf.image.crop_and_resize`` per
batch.  Every draw is stateless, a function of the batch seed that
:class:`~inception_keras.data.DataBundle` derives from ``(seed, epoch, batch)``.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


def _convert_channels(images: tf.Tensor, channels: int) -> tf.Tensor:
    """(B, H, W, 1 or 3) float images to ``channels`` (gray tiled to RGB, RGB to luma)."""
    have = images.shape[-1]
    if have == channels:
        return images
    if channels == 3:
        return tf.image.grayscale_to_rgb(images)
    return tf.image.rgb_to_grayscale(images)


def _scale(images: tf.Tensor) -> tf.Tensor:
    """0..255 floats to [-1, 1]."""
    return tf.clip_by_value(images, 0.0, 255.0) / 127.5 - 1.0


def to_model_input(images: tf.Tensor, size: int, channels: int) -> tf.Tensor:
    """The deterministic path: uint8 batch -> resized, channel-converted float32 in [-1, 1]."""
    x = tf.cast(images, tf.float32)
    if channels < x.shape[-1]:
        x = _convert_channels(x, channels)
    if tuple(x.shape[1:3]) != (size, size):
        # Stored images are at most 8/7 of image_size, where antialiasing changes little and costs 2-3x.
        antialias = max(x.shape[1:3]) > 1.5 * size
        x = tf.image.resize(x, (size, size), method="bilinear", antialias=antialias)
    return _scale(_convert_channels(x, channels))


def _crop_boxes(top: tf.Tensor, left: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
                image_hw: tuple[int, int], size: int, flip: tf.Tensor) -> tf.Tensor:
    """Normalised ``crop_and_resize`` boxes sampling regions the way ``tf.image.resize`` would.

    A region (top, left, height, width) in source pixels is sampled at half-pixel
    centres, so the whole image with no flip equals a plain bilinear resize.
    ``flip`` swaps x1 and x2, which crop_and_resize turns into a mirrored crop.
    """
    h, w = (float(max(d - 1, 1)) for d in image_hw)
    y1 = (top + 0.5 * height / size - 0.5) / h
    x1 = (left + 0.5 * width / size - 0.5) / w
    y2 = y1 + height * (size - 1) / (size * h)
    x2 = x1 + width * (size - 1) / (size * w)
    x1, x2 = tf.where(flip, x2, x1), tf.where(flip, x1, x2)
    return tf.stack([y1, x1, y2, x2], axis=1)


def _flip_crop_regions(batch: tf.Tensor, image_hw: tuple[int, int], size: int,
                       seeds: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Whole-image regions shifted by up to size // 8 output pixels (pad-and-crop with zeros)."""
    pad = max(1, size // 8)
    h, w = (float(d) for d in image_hw)
    dy = tf.random.stateless_uniform([batch], seeds[0], -pad, pad + 1, dtype=tf.int32)
    dx = tf.random.stateless_uniform([batch], seeds[1], -pad, pad + 1, dtype=tf.int32)
    top = tf.cast(dy, tf.float32) * h / size
    left = tf.cast(dx, tf.float32) * w / size
    return top, left, tf.fill([batch], h), tf.fill([batch], w)


def _inception_regions(batch: tf.Tensor, image_hw: tuple[int, int],
                       seeds: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Random regions of 8%..100% of the area with aspect ratio 3/4..4/3 (clipped to the image)."""
    h, w = (float(d) for d in image_hw)
    area = tf.random.stateless_uniform([batch], seeds[0], 0.08, 1.0) * h * w
    ratio = tf.exp(tf.random.stateless_uniform([batch], seeds[1], math.log(3 / 4), math.log(4 / 3)))
    height = tf.minimum(tf.sqrt(area / ratio), h)
    width = tf.minimum(tf.sqrt(area * ratio), w)
    top = tf.random.stateless_uniform([batch], seeds[2]) * (h - height)
    left = tf.random.stateless_uniform([batch], seeds[3]) * (w - width)
    return top, left, height, width


_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_LUMA = np.array([0.2989, 0.5870, 0.1140], np.float32)  # tf.image.rgb_to_grayscale's weights


def _colour_matrices(batch: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
    """Per-image 3x3 matrices: saturation x0.5..1.5 (mix with luma), then hue +-0.2 turn (I/Q rotation)."""
    saturation = tf.random.stateless_uniform([batch, 1, 1], seeds[0], 0.5, 1.5)
    to_gray = tf.constant(np.tile(_LUMA, (3, 1)))
    saturate = saturation * tf.eye(3) + (1 - saturation) * to_gray
    angle = tf.random.stateless_uniform([batch], seeds[1], -0.2, 0.2) * 2 * math.pi
    cos, sin, zero, one = tf.cos(angle), tf.sin(angle), tf.zeros_like(angle), tf.ones_like(angle)
    rotate = tf.stack([tf.stack([one, zero, zero], 1), tf.stack([zero, cos, -sin], 1),
                       tf.stack([zero, sin, cos], 1)], 1)
    to_yiq = tf.constant(_RGB_TO_YIQ)
    return tf.linalg.inv(to_yiq)[None] @ rotate @ to_yiq[None] @ saturate


def _photometric(images: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
    """TF-Slim's colour distortions (brightness, saturation, hue, contrast), a new draw per image.

    On 0..255 floats (B, H, W, C); saturation and hue only for RGB.  The four steps
    are linear, so they are applied as one per-image affine map: with brightness
    b, colour matrix M and contrast c, ``c * M x + M (b + (1 - c) * mean(x))``.
    """
    batch, channels = tf.shape(images)[0], images.shape[-1]
    brightness = tf.random.stateless_uniform([batch, 1], seeds[0], -32.0, 32.0)
    contrast = tf.random.stateless_uniform([batch, 1, 1], seeds[1], 0.5, 1.5)
    if channels == 3:
        matrix = _colour_matrices(batch, seeds[2:])
    else:
        matrix = tf.ones([batch, 1, 1])
    mean = tf.reduce_mean(images, axis=(1, 2))
    shift = matrix @ (brightness + (1 - contrast[:, 0]) * mean)[..., None]  # (B, C, 1)
    flat = tf.reshape(images, [batch, -1, channels]) @ tf.transpose(contrast * matrix, [0, 2, 1])
    x = tf.reshape(flat + tf.transpose(shift, [0, 2, 1]), tf.shape(images))
    return tf.clip_by_value(x, 0.0, 255.0)


def augment_batch(images: tf.Tensor, size: int, channels: int, augment: str, seed: tf.Tensor) -> tf.Tensor:
    """The training path: uint8 batch -> augmented float32 in [-1, 1] (``augment`` != "auto")."""
    if augment == "none":
        return to_model_input(images, size, channels)
    x = tf.cast(images, tf.float32)
    if channels < x.shape[-1]:
        x = _convert_channels(x, channels)
    batch = tf.shape(x)[0]
    image_hw = (int(x.shape[1]), int(x.shape[2]))
    seeds = tf.random.experimental.stateless_split(seed, 9)
    if augment == "flip_crop":
        regions = _flip_crop_regions(batch, image_hw, size, seeds)
    else:
        regions = _inception_regions(batch, image_hw, seeds)
    flip = tf.random.stateless_uniform([batch], seeds[4]) < 0.5
    boxes = _crop_boxes(*regions, image_hw=image_hw, size=size, flip=flip)
    x = tf.image.crop_and_resize(x, boxes, tf.range(batch), (size, size), extrapolation_value=0.0)
    x = _convert_channels(x, channels)
    if augment == "inception":
        x = _photometric(x, seeds[5:])
    return _scale(x)
