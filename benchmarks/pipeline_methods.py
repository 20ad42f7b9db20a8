"""The product's own configurations as benchmark methods (registered into ``benchmarks.accuracy``).

- ``difflc``: the default pipeline exactly as the plugin runs it (compact scene-trained backbone, diffusion
  features of every modality + the pixel's bands, MLP head), through ``engine.pipeline.fit_predict_arrays``.
- ``difflc_nodiff``: the no-diffusion control: the same representations, head and training, with the
  diffusion features removed (the head sees the standardised pixel bands only). A win of ``difflc`` over this
  control is the diffusion features' own contribution.
- ``difflc_untrained``: the untrained-network control (compact backbone with 1 training step).
"""
from __future__ import annotations

import numpy as np

from benchmarks.accuracy import from_map_predictor, register
from engine.pipeline import fit_predict_arrays
from engine.readers import ArrayReader, StackedReader
from engine.settings import PipelineSettings


def _settings(seed: int, **backbone) -> PipelineSettings:
    s = PipelineSettings()
    s.seed = seed
    s.device = "cpu"
    for k, v in backbone.items():
        setattr(s.backbone, k, v)
    return s


def _pipeline(scene, train_map, seed, **backbone):
    return fit_predict_arrays(scene.hsi, scene.sar, train_map, _settings(seed, **backbone), scene.hsi_meta,
                              scene.sar_meta)


def difflc(scene, train_map, seed):
    return _pipeline(scene, train_map, seed)


def difflc_untrained(scene, train_map, seed):
    return _pipeline(scene, train_map, seed, compact_steps=1)


def difflc_nodiff(scene, split, seed):
    from engine.classifier import train_head
    from engine.pipeline import fit_scene_representations

    s = _settings(seed)
    reader = StackedReader(ArrayReader(scene.hsi), ArrayReader(scene.sar) if scene.sar is not None else None)
    reps = fit_scene_representations(reader, scene.hsi_meta, scene.sar_meta, s, progress=_quiet())
    hsi, sar = reader.split(np.concatenate([scene.hsi] + ([scene.sar] if scene.sar is not None else []), axis=0))
    spec = np.nan_to_num(reps.spectrum(hsi, sar), nan=0.0)
    x_train = spec[:, split.train_rows, split.train_cols].T
    head = train_head(x_train, split.train_y, [x_train.shape[1]], s.head, seed=seed, fusion=s.features.fusion,
                      n_classes=scene.n_classes)
    return head.predict(spec[:, split.eval_rows, split.eval_cols].T)


def _quiet():
    from engine.progress import Progress

    return Progress()


register("difflc", from_map_predictor(difflc))
register("difflc_untrained", from_map_predictor(difflc_untrained))
register("difflc_nodiff", difflc_nodiff)
