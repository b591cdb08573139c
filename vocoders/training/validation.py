"""Validation during training: teacher-forced loss on fixed segments, and validation audio.

Validation runs on rank 0 only. Losses go to `<run_dir>/metrics.jsonl` (as "valid" records), the audio to
    samples/step-00001000_<utt>.wav         validation audio
With an EMA of the weights (`trainer.ema_decay`), validation and the validation audio use the EMA.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import torch

from ..audio import write_wav
from ..data import mel_window
from ..engines import make_engine
from ..models.base import VocoderModel
from ..sampling import draw_noise

log = logging.getLogger("vocoders.training")  # the package's logger, as before it was split into modules


class ValidationMixin:
    """Validation for `Trainer` (loop.py).

    Uses these Trainer attributes: `cfg` (`data.valid_segments`, `data.batch_size`, `seed`,
    `trainer.val_audio_seconds`, `trainer.val_engine`, `trainer.val_temperature`), `model`, `ema`,
    `inference_model`, `train_set` (its `segment_frames` and `segment`), `valid_features`, `device`,
    `mel_config`, `run_dir`, `step`, `sink` and `write_metrics`; caches the segments in
    `_validation_segments` (None until the first validation).
    """

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Teacher-forced loss on fixed segments of the validation utterances.

        `loss` and its parts are those of the inference weights (the EMA when on); `raw_loss` is
        the live weights' loss when they differ.
        """
        totals = self.validation_loss(self.inference_model)
        if self.ema is not None:
            totals["raw_loss"] = self.validation_loss(self.model)["loss"]
        self.write_metrics("valid", totals)
        return totals

    def validation_segments(self) -> tuple[list[torch.Tensor], ...]:
        """The fixed validation segments: (mels, audios[, f0s]), drawn once as training draws its segments.

        Utterance i % n of the n validation utterances, at a start drawn uniformly over the whole
        utterance by a generator of its own (seeded by `seed`), so validation sees speech and silence
        in the proportion training does and the same segments at every validation.
        """
        if self._validation_segments is None:
            count = int(self.cfg.data.get("valid_segments", 32))
            seg = self.train_set.segment_frames
            generator = torch.Generator().manual_seed(int(self.cfg.seed))
            items = []
            for i in range(count):
                feats = self.valid_features[i % len(self.valid_features)]
                spare = max(0, feats.frames - seg)
                start = int(torch.randint(0, spare + 1, (), generator=generator))
                items.append(self.train_set.segment(feats, start))
            self._validation_segments = tuple(list(field) for field in zip(*items, strict=True))
        return self._validation_segments

    def validation_loss(self, model: VocoderModel) -> dict[str, float]:
        model.eval()
        d = self.cfg.data
        fields = self.validation_segments()
        count = len(fields[0])
        totals: dict[str, float] = {}
        batch = max(1, int(d.batch_size))
        for i in range(0, count, batch):
            mel, audio, *extra = (torch.stack(field[i : i + batch]).to(self.device) for field in fields)
            loss, parts = model.loss(mel, audio, *extra)
            weight = mel.shape[0] / count
            totals["loss"] = totals.get("loss", 0.0) + float(loss) * weight
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v * weight
        return totals

    @torch.no_grad()
    def validation_audio(self) -> Path | None:
        """Vocode the first validation utterance (or its first seconds) to a WAV in the run dir."""
        t = self.cfg.trainer
        model = self.inference_model.eval()
        feats = self.valid_features[0]
        seconds = t.get("val_audio_seconds")
        frames = feats.frames
        if seconds:
            frames = min(frames, max(1, int(float(seconds) * self.mel_config.sample_rate / model.hop_length)))
        ctx = model.mel_context
        mel = torch.from_numpy(mel_window(feats.mel, -ctx, frames + ctx)).unsqueeze(0).to(self.device)
        engine = make_engine(str(t.get("val_engine", "auto")), model, self.device)
        cond = model.conditioning(mel)
        noise = draw_noise(1, model.num_samples(cond), model.noise_per_step, seed=int(self.cfg.seed))
        started = time.perf_counter()
        audio = model.decode(engine.generate(cond, noise, float(t.get("val_temperature", 1.0))))[0]
        elapsed = time.perf_counter() - started
        name = re.sub(r"[^\w.-]+", "_", feats.utterance.id)
        path = write_wav(
            self.run_dir / "samples" / f"step-{self.step:08d}_{name}.wav", audio, self.mel_config.sample_rate
        )
        log.info("validation audio %s (%d samples in %.1f s, engine %s)", path, audio.numel(), elapsed, engine.name)
        self.sink.validation_audio(self.step, name, audio, feats.mel[:, :frames], self.mel_config)
        return path
