"""Shape of a segmented object, by fitting the world's own shapes to its mask.

The world draws five shapes that are never rotated (the triangle points up, the diamond stands
on a corner) and places each one by its area centroid. So instead of generic descriptors (fill
ratio, corner counts), which blur away on objects 9 pixels wide, each candidate shape is rendered
with the renderer's signed distance functions at the mask's centroid, with the radius its area
implies, and nudged over a small grid of offsets, scales and blurs (generated videos are soft,
and a blurred cross is closer to a sharp diamond than to a sharp cross); the shape whose best
template differs least from the mask wins. A soft mask (coverage in [0, 1], as antialiasing and
blur produce) is used as is; a boolean mask works too. Cut objects (by a wall or the frame edge)
get a wider search that lets the template extend into the hidden part.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from sorajax.data.world.options import SHAPE_NOUNS
from sorajax.data.world.render import SHAPE_AREAS, shape_distance

SHAPES: tuple[str, ...] = tuple(SHAPE_NOUNS)

# Search grid around the moment estimate: centre offsets (pixels) and radius scales.
_OFFSETS = np.linspace(-0.5, 0.5, 5)
_SCALES = np.linspace(0.88, 1.12, 6)
_CUT_SCALES = np.geomspace(0.9, 2.2, 6)  # a cut object's visible area understates its size
_CUT_REFINE_SCALES = np.geomspace(0.85, 1.18, 5)
# Gaussian blurs (pixels) tried in the final fit: 0 is the renderer's sharp antialiasing, the
# others stand in for the softness of a generated video, so blurred crosses do not look like diamonds.
_BLURS = (0.0, 0.8, 1.4)
_PAD = 2  # pixels of background kept around the mask's bounding box
_MIN_AREA = 4.0  # pixels; below this no shape can be told apart


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(
            f"mask must be a 2-D [H, W] array, got shape {mask.shape}; pass one frame's mask "
            "(e.g. track.masks[t])."
        )
    alpha = mask.astype(np.float64)
    if alpha.size and (alpha.min() < 0.0 or alpha.max() > 1.0):
        raise ValueError(
            f"mask values must be in [0, 1] (bool or coverage), got [{alpha.min()}, {alpha.max()}]; "
            "divide 0..255 masks by 255."
        )
    return alpha


def _best_fit(
    shape: str,
    crop: np.ndarray,
    weight: np.ndarray,
    centre: np.ndarray,
    radius: float,
    offsets: np.ndarray,
    scales: np.ndarray,
    blurs: tuple[float, ...] = (0.0,),
    free_gain: bool = False,
) -> tuple[float, np.ndarray, float]:
    """Smallest weighted squared error over a grid of centre offsets, radius scales and blurs."""
    rows, cols = np.indices(crop.shape, dtype=np.float32)
    ox, oy = np.meshgrid(offsets, offsets, indexing="ij")
    shifts = np.stack([ox.ravel(), oy.ravel()], axis=1)  # [S, 2]
    # Pixel (r, c) has its centre at (c + 0.5, r + 0.5) in renderer coordinates and the centroid
    # of index coordinates is shifted by the same 0.5, so index coordinates are used throughout.
    dx = cols[None] - (centre[0] + shifts[:, 0])[:, None, None]  # [S, h, w]
    dy = rows[None] - (centre[1] + shifts[:, 1])[:, None, None]
    target = crop[None] * weight[None]
    m_m = float((crop * crop * weight).sum())
    best = (np.inf, centre, radius)
    for scale in scales:
        sharp = np.clip(0.5 - shape_distance(shape, dx, dy, float(radius * scale)), 0.0, 1.0)
        for sigma in blurs:
            template = sharp
            if sigma > 0.0:
                template = ndimage.gaussian_filter(sharp, (0.0, sigma, sigma), mode="constant")
            # Least-squares gain per template: a blurred object never reaches its full colour, so
            # its coverage map is dimmer (or, normalised by a dimmed core, fatter) than a template.
            if free_gain:
                t_m = (template * target).sum(axis=(1, 2))
                t_t = np.maximum((template * template * weight[None]).sum(axis=(1, 2)), 1e-6)
                residual = m_m - t_m**2 / t_t
            else:
                residual = ((template - crop[None]) ** 2 * weight[None]).sum(axis=(1, 2))
            k = int(np.argmin(residual))
            if residual[k] < best[0]:
                best = (float(residual[k]), centre + shifts[k], float(radius * scale))
    return best


def shape_errors(mask: np.ndarray, ignore: np.ndarray | None = None) -> dict[str, float]:
    """Squared difference between the mask and each shape's best-fitting template, per mask pixel.

    `ignore` ([H, W], bool or weight in [0, 1]) marks pixels that say nothing about the shape,
    e.g. a wall in front of the object; they are left out of the error. When the mask reaches
    ignored pixels or the frame edge the object may be cut, so the search also tries templates
    that are larger and centred further away (into the hidden part). Errors are divided by the
    mask's area, so they compare across object sizes.
    """
    alpha = _check_mask(mask)
    area = float(alpha.sum())
    if area < _MIN_AREA:
        raise ValueError(
            f"mask covers only {area:.1f} pixels, too few to tell shapes apart; "
            "check that an object was found before classifying its shape."
        )
    weight = np.ones_like(alpha) if ignore is None else 1.0 - np.asarray(ignore, np.float64)
    if weight.shape != alpha.shape:
        raise ValueError(
            f"ignore has shape {weight.shape} but mask has {alpha.shape}; pass the same frame's wall mask."
        )
    solid = alpha >= 0.5
    edge = solid[0].any() or solid[-1].any() or solid[:, 0].any() or solid[:, -1].any()
    cut = bool(edge or (ndimage.binary_dilation(solid, iterations=2) & (weight < 0.5)).any())
    pad = _PAD + (int(np.ceil(2.0 * np.sqrt(area / np.pi))) if cut else 0)
    rows, cols = np.nonzero(alpha > 0.05)
    r0, c0 = max(0, rows.min() - pad), max(0, cols.min() - pad)
    r1, c1 = rows.max() + pad + 1, cols.max() + pad + 1
    crop, weight = alpha[r0:r1, c0:c1].astype(np.float32), weight[r0:r1, c0:c1].astype(np.float32)
    mass = float(crop.sum())
    r, c = np.indices(crop.shape, dtype=np.float32)
    centre_all = np.array([(c * crop).sum() / mass, (r * crop).sum() / mass])
    errors: dict[str, float] = {}
    for shape in SHAPES:
        radius = float(np.sqrt(mass / SHAPE_AREAS[shape]))
        if cut:  # coarse search for the hidden part, then a finer one around the best coarse fit
            step = max(1.0, float(np.ceil(1.2 * radius)) / 6.0)
            coarse = step * np.arange(-6.0, 7.0)
            _, centre, radius = _best_fit(shape, crop, weight, centre_all, radius, coarse, _CUT_SCALES)
            _, centre, radius = _best_fit(
                shape, crop, weight, centre, radius, np.linspace(-step, step, 5), _CUT_REFINE_SCALES
            )
        else:
            centre = centre_all
        error, _, _ = _best_fit(
            shape, crop, weight, centre, radius, _OFFSETS, _SCALES, _BLURS, free_gain=True
        )
        errors[shape] = error / mass
    return errors


def classify_shape(mask: np.ndarray, ignore: np.ndarray | None = None) -> str:
    """Name of the world shape ("circle", "square", "triangle", "diamond", "cross") the mask fits best."""
    errors = shape_errors(mask, ignore)
    return min(errors, key=errors.__getitem__)

