"""The one image type that travels through Vigil.

A ``Frame`` is an ``[H, W, 3]`` uint8 array: BGR as OpenCV decodes it from a camera or a file
(:class:`pipeline.ingest.source.RawFrame`), RGB from :func:`pipeline.core.preprocess.bgr_to_rgb` on
(model-sized frames on the bus, what the model is fed). The type cannot tell the two channel orders apart;
the names that hold one say which (``bgr``, ``rgb``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.uint8]
