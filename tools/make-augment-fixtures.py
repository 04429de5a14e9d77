#!/usr/bin/env python3
"""Writes test/fixtures/augment/keras-shift-flip.json: reference outputs of Keras' ImageDataGenerator
shift + horizontal flip (fill_mode='nearest', order=1), for test/augment.test.ts.

Run once, by hand, and commit the output; CI never needs Python:

    python3 tools/make-augment-fixtures.py

The transform is computed by the few lines of Keras that matter, copied from keras-preprocessing 1.1.2
(the last release; commit 4538765f, keras_preprocessing/image/affine_transformations.py):
  - transform_matrix_offset_center, lines 245-251
  - apply_affine_transform, lines 291-298 (shift matrix) and 319-335 (centering, per-channel
    scipy.ndimage affine_transform, channels last)
  - flip_axis, lines 22-26, applied after the affine transform as in
    image_data_generator.py ImageDataGenerator.apply_transform, lines 881-882
so the fixture checks Keras' semantics, not our reading of them. `tx` is the row shift (Keras draws it
from height_shift_range * rows) and `ty` the column shift.

Keras after keras-preprocessing PR #318 (2020-10-31, in tf.keras >= 2.6 and Keras 3's legacy
ImageDataGenerator) swaps the matrix axes when col_axis > row_axis, so there the row shift is `ty`.
This script checks that the newer code with (tx, ty) exchanged gives identical bytes, so the same
fixture stands for both; only which random draw moves which axis differs, and with equal shift ranges
the two draws have the same distribution.
"""
import base64
import json
import os

import numpy as np
from scipy import ndimage

OUT = os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'augment', 'keras-shift-flip.json')


def flip_axis(x, axis):
    x = np.asarray(x).swapaxes(axis, 0)
    x = x[::-1, ...]
    x = x.swapaxes(0, axis)
    return x


def transform_matrix_offset_center(matrix, x, y):
    o_x = float(x) / 2 + 0.5
    o_y = float(y) / 2 + 0.5
    offset_matrix = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset_matrix = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    return np.dot(np.dot(offset_matrix, matrix), reset_matrix)


def keras_1_1_2_shift(x, tx, ty, row_axis=0, col_axis=1, channel_axis=2, fill_mode='nearest', cval=0., order=1):
    """apply_affine_transform with theta=0, shear=0, zx=zy=1 (keras-preprocessing 1.1.2)."""
    transform_matrix = None
    if tx != 0 or ty != 0:
        transform_matrix = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    if transform_matrix is not None:
        h, w = x.shape[row_axis], x.shape[col_axis]
        transform_matrix = transform_matrix_offset_center(transform_matrix, h, w)
        x = np.rollaxis(x, channel_axis, 0)
        final_affine_matrix = transform_matrix[:2, :2]
        final_offset = transform_matrix[:2, 2]
        channel_images = [ndimage.affine_transform(
            x_channel, final_affine_matrix, final_offset, order=order, mode=fill_mode, cval=cval)
            for x_channel in x]
        x = np.stack(channel_images, axis=0)
        x = np.rollaxis(x, 0, channel_axis + 1)
    return x


def keras_master_shift(x, tx, ty, row_axis=0, col_axis=1, channel_axis=2, fill_mode='nearest', cval=0., order=1):
    """The same after PR #318: centring uses -0.5 and the axes are swapped for channels-last images."""
    transform_matrix = None
    if tx != 0 or ty != 0:
        transform_matrix = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]], dtype=float)
    if transform_matrix is not None:
        h, w = x.shape[row_axis], x.shape[col_axis]
        o_x, o_y = float(h) / 2 - 0.5, float(w) / 2 - 0.5
        offset_matrix = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
        reset_matrix = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
        transform_matrix = np.dot(np.dot(offset_matrix, transform_matrix), reset_matrix)
        x = np.rollaxis(x, channel_axis, 0)
        if col_axis > row_axis:
            transform_matrix[:, [0, 1]] = transform_matrix[:, [1, 0]]
            transform_matrix[[0, 1]] = transform_matrix[[1, 0]]
        channel_images = [ndimage.affine_transform(
            x_channel, transform_matrix[:2, :2], transform_matrix[:2, 2], order=order, mode=fill_mode, cval=cval)
            for x_channel in x]
        x = np.stack(channel_images, axis=0)
        x = np.rollaxis(x, 0, channel_axis + 1)
    return x


def keras_apply(x, tx, ty, flip):
    """ImageDataGenerator.apply_transform for shift + horizontal flip, channels last."""
    y = keras_1_1_2_shift(x, tx, ty)
    if flip:
        y = flip_axis(y, 1)
    newer = keras_master_shift(x, ty, tx)
    if flip:
        newer = flip_axis(newer, 1)
    assert np.array_equal(y, newer), 'Keras 1.1.2 and post-#318 Keras disagree after swapping tx and ty'
    # The plain scipy call the TypeScript port is documented against: out[i, j] = in(i + tx, j + ty).
    direct = np.stack([ndimage.affine_transform(x[:, :, c], np.eye(2), offset=(tx, ty), order=1, mode='nearest')
                       for c in range(x.shape[2])], axis=2)
    if flip:
        direct = direct[:, ::-1, :]
    assert np.array_equal(y, direct), 'Keras path and direct affine_transform disagree'
    return y


# (height, width, depth, rows = tx, cols = ty, flip): integer, fractional, negative, up to +-3.2 px,
# beyond the image edge, with and without flip; a non-square image catches a rows/cols mix-up.
CASES = [
    (8, 8, 3, 1, 0, False),
    (8, 8, 3, 0, 1, False),
    (8, 8, 3, -1, -2, False),
    (8, 8, 3, 0, 0, True),
    (8, 8, 3, 0.5, 0, False),
    (8, 8, 3, -0.5, 0.25, False),
    (8, 8, 3, 2.7, -3.2, False),
    (8, 8, 3, -3.2, 3.2, True),
    (8, 8, 3, 1.3, -0.7, True),
    (8, 8, 3, 9.5, -10.25, False),
    (8, 8, 3, -12.0, 8.75, True),
    (5, 7, 1, 1.5, -2.25, False),
    (5, 7, 1, -0.3, 0.6, True),
    (5, 7, 2, 2.0, 3.0, False),
    (32, 32, 3, 3.2, -3.2, False),
    (32, 32, 3, -1.75, 2.4, True),
    (32, 32, 3, 0.1, -0.05, True),
    (32, 32, 3, -2, 3, False),
    (32, 32, 3, 0.0, 0.0, False),
    (32, 32, 3, 40.0, -40.5, True),
]


def main():
    rng = np.random.default_rng(20240611)
    cases = []
    for height, width, depth, tx, ty, flip in CASES:
        image = rng.integers(0, 256, size=(height, width, depth), dtype=np.uint8)
        # ImageDataGenerator.flow casts to float32 (NumpyArrayIterator dtype), so Keras computes on float32.
        out = keras_apply(image.astype(np.float32), tx, ty, flip)
        assert out.dtype == np.float32
        cases.append({
            'height': height, 'width': width, 'depth': depth,
            'rows': tx, 'cols': ty, 'flip': flip,
            'input': base64.b64encode(image.tobytes()).decode('ascii'),
            'expected': base64.b64encode(np.ascontiguousarray(out).astype('<f4').tobytes()).decode('ascii'),
        })
    doc = {
        'about': 'Keras ImageDataGenerator shift + horizontal flip, fill_mode=nearest, order=1. Written by '
                 'tools/make-augment-fixtures.py; input is uint8 HWC, expected is float32 little-endian HWC, '
                 'both base64.',
        'scipy': __import__('scipy').__version__,
        'numpy': np.__version__,
        'cases': cases,
    }
    with open(OUT, 'w') as f:
        json.dump(doc, f, indent=1)
        f.write('\n')
    print(f'wrote {len(cases)} cases to {os.path.normpath(OUT)}')


if __name__ == '__main__':
    main()
