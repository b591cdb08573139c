"""Datasets: manifests, a feature cache, and random hop-aligned training segments.

Manifest forms (`find_utterances`):
- a folder of audio, searched recursively (wav, flac, ogg); a fixed, hash-chosen subset is the
  validation split;
- a CSV manifest with a header, `|` or `,` separated, e.g. `id|seconds|split|text` with the audio
  under `wavs/` beside it; columns `id` or `path` name the audio, `split` (train/valid/test) is
  optional, `mel` names a ground-truth-aligned (GTA) mel `.npy`;
- GTA pairs: a folder where each audio file has a `.npy` mel of the same stem beside it, made by a
  TTS model (for fine-tuning on TTS output).

Files that are unreadable, silent, too short, of a refused sample rate or with a mismatched GTA mel
are skipped with a warning and counted in one summary line; they never stop a run.

Features are computed once per file and cached under `<cache_dir>/<MelConfig fingerprint>/`, so a
changed mel definition builds a new cache; a changed file (size or mtime) is recomputed.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .audio import AUDIO_EXTENSIONS, float_to_int16, read_audio
from .errors import AudioError, ManifestError
from .features import MelConfig, MelSpectrogram

log = logging.getLogger(__name__)

CACHE_VERSION = 1
F0_FRAME_MS = 5.0  # the reference tracker's frame period (that of `vocoders.evaluate`)
SILENCE_PEAK = 1e-3  # -60 dBFS


@dataclass(frozen=True)
class Utterance:
    """One entry of a manifest. mel_path is set for GTA pairs."""

    id: str
    audio_path: Path
    split: str = "train"
    mel_path: Path | None = None


@dataclass
class Features:
    """Cached features of one utterance: audio [frames * hop] int16, mel [n_mels, frames] float32, and
    where a model trains against it, the reference tracker's F0 in Hz at each frame's centre
    f0 [frames] float32 (0 = unvoiced; `FeatureCache.with_f0`)."""

    utterance: Utterance
    audio: np.ndarray
    mel: np.ndarray
    f0: np.ndarray | None = None

    @property
    def frames(self) -> int:
        return self.mel.shape[1]


# ---- manifests -------------------------------------------------------------------------------


def find_utterances(path: str | os.PathLike, kind: str = "auto", valid_size: int = 10) -> list[Utterance]:
    """List the utterances of a dataset.

    Args:
        path: a folder of audio or a CSV manifest.
        kind: "auto", "folder", "csv" or "gta".
        valid_size: for folders (and CSVs without a split column), how many utterances form the
            validation split, chosen by a hash of their relative path (stable across machines).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ManifestError(f"{path}: no such dataset folder or manifest")
    if kind == "auto":
        kind = "csv" if path.is_file() else "folder"
    if kind == "csv":
        return _from_csv(path, valid_size)
    if kind in ("folder", "gta"):
        if not path.is_dir():
            raise ManifestError(f"{path}: expected a folder for data kind {kind!r}")
        return _from_folder(path, valid_size, require_mels=kind == "gta")
    raise ManifestError(f"unknown data kind {kind!r}; use auto, folder, csv or gta")


def _from_folder(root: Path, valid_size: int, require_mels: bool) -> list[Utterance]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not files:
        raise ManifestError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found")
    items = []
    for f in files:
        mel = f.with_suffix(".npy")
        if require_mels and not mel.is_file():
            log.warning("%s: no GTA mel %s beside it; skipped", f, mel.name)
            continue
        items.append(Utterance(str(f.relative_to(root).with_suffix("")), f, "train", mel if mel.is_file() else None))
    return _assign_valid(items, valid_size)


def _assign_valid(items: list[Utterance], valid_size: int) -> list[Utterance]:
    """Mark `valid_size` hash-chosen utterances as validation (never all of them)."""
    count = min(valid_size, max(0, len(items) - 1))
    ranked = sorted(items, key=lambda u: hashlib.sha1(u.id.encode()).hexdigest())
    chosen = {u.id for u in ranked[:count]}
    return [Utterance(u.id, u.audio_path, "valid" if u.id in chosen else "train", u.mel_path) for u in items]


def _from_csv(manifest: Path, valid_size: int) -> list[Utterance]:
    text = manifest.read_text(encoding="utf-8-sig")
    lines = text.splitlines()
    if not lines:
        raise ManifestError(f"{manifest}: empty manifest")
    delimiter = "|" if "|" in lines[0] else ","
    reader = csv.DictReader(lines, delimiter=delimiter, quoting=csv.QUOTE_NONE)
    columns = [c.strip().lower() for c in (reader.fieldnames or [])]
    if "id" not in columns and "path" not in columns:
        raise ManifestError(f"{manifest}: header needs an 'id' or 'path' column, found {columns}")
    base = manifest.parent
    items, has_split = [], "split" in columns
    for number, row in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        name = row.get("path") or row.get("id")
        if not name:
            log.warning("%s:%d: no id or path; skipped", manifest, number)
            continue
        audio = _locate_audio(base, name)
        mel = base / row["mel"] if row.get("mel") else None
        split = row.get("split", "train") or "train"
        items.append(Utterance(row.get("id") or Path(name).stem, audio, split, mel))
    if not items:
        raise ManifestError(f"{manifest}: the manifest lists no utterances")
    return items if has_split else _assign_valid(items, valid_size)


def _locate_audio(base: Path, name: str) -> Path:
    candidate = base / name
    if candidate.suffix.lower() in AUDIO_EXTENSIONS:
        return candidate
    for folder in (base / "wavs", base):
        for ext in AUDIO_EXTENSIONS:
            p = folder / f"{name}{ext}"
            if p.is_file():
                return p
    return base / "wavs" / f"{name}.wav"  # reported as unreadable later


# ---- feature cache ---------------------------------------------------------------------------


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "vocoders" / "features"


class FeatureCache:
    """Computes (audio, mel) per utterance once and keeps them as .npy files.

    Layout: <root>/<mel fingerprint>/<sha1 of path, size, mtime>.{audio,mel}.npy
    """

    def __init__(self, root: str | os.PathLike | None, config: MelConfig, allow_resample: bool = True) -> None:
        self.config = config
        self.allow_resample = allow_resample
        self.root = Path(root or default_cache_dir()) / f"v{CACHE_VERSION}-{config.fingerprint()}"
        self._mel = MelSpectrogram(config)

    def _key(self, utt: Utterance) -> str:
        parts = [str(utt.audio_path.resolve())]
        for p in (utt.audio_path, utt.mel_path):
            if p is not None:
                stat = p.stat()
                parts += [str(stat.st_size), str(stat.st_mtime_ns)]
        parts.append(str(self.allow_resample))
        return hashlib.sha1("|".join(parts).encode()).hexdigest()

    def load(self, utt: Utterance) -> Features:
        """Cached features of `utt`, computing them on a miss. Raises AudioError for a bad file."""
        try:
            key = self._key(utt)
        except OSError:
            raise AudioError(f"{utt.audio_path}: cannot read audio (no such file)") from None
        audio_file = self.root / f"{key}.audio.npy"
        mel_file = self.root / f"{key}.mel.npy"
        if audio_file.is_file() and mel_file.is_file():
            try:
                return Features(utt, np.load(audio_file, mmap_mode="r"), np.load(mel_file, mmap_mode="r"))
            except (OSError, ValueError):
                log.warning("cache entry %s is corrupt; recomputing", audio_file)
        audio, mel = self._compute(utt)
        self.root.mkdir(parents=True, exist_ok=True)
        for file, array in ((mel_file, mel), (audio_file, audio)):
            tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as handle:
                np.save(handle, array)
            os.replace(tmp, file)
        return Features(utt, audio, mel)

    def with_f0(self, feats: Features) -> Features:
        """`feats` with the reference tracker's per-frame F0 (`vocoders.metrics.frame_f0`, the tracker
        `vocoders.evaluate` scores F0 and V/UV with), computed once per utterance and cached beside it."""
        from .metrics import frame_f0

        try:
            key = self._key(feats.utterance)
        except OSError:
            raise AudioError(f"{feats.utterance.audio_path}: cannot read audio (no such file)") from None
        file = self.root / f"{key}.f0-{F0_FRAME_MS:g}ms.npy"
        if file.is_file():
            try:
                f0 = np.load(file)
                if f0.shape == (feats.frames,):
                    return dataclasses.replace(feats, f0=f0)
            except (OSError, ValueError):
                pass
            log.warning("cache entry %s is corrupt; recomputing", file)
        audio = np.asarray(feats.audio, dtype=np.float64) / 32768.0
        f0 = frame_f0(audio, self.config.sample_rate, self.config.hop_length, F0_FRAME_MS).astype(np.float32)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            np.save(handle, f0)
        os.replace(tmp, file)
        return dataclasses.replace(feats, f0=f0)

    def _compute(self, utt: Utterance) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        audio, rate = read_audio(utt.audio_path)
        if rate != c.sample_rate:
            if not self.allow_resample:
                raise AudioError(f"{utt.audio_path}: sample rate {rate} Hz, expected {c.sample_rate} Hz")
            audio, _ = read_audio(utt.audio_path, c.sample_rate)
        if np.abs(audio).max() < SILENCE_PEAK:
            raise AudioError(f"{utt.audio_path}: silent (peak below -60 dBFS)")
        frames = len(audio) // c.hop_length
        if frames < 1 or len(audio) <= c.padding:
            raise AudioError(f"{utt.audio_path}: too short ({len(audio)} samples)")
        if utt.mel_path is not None:
            mel = _read_gta_mel(utt.mel_path, c)
            if abs(mel.shape[1] - frames) > 1:
                raise AudioError(f"{utt.mel_path}: GTA mel has {mel.shape[1]} frames, the audio gives {frames}")
            frames = min(frames, mel.shape[1])
            mel = mel[:, :frames]
        else:
            with torch.no_grad():
                mel = self._mel(torch.from_numpy(audio)).numpy()[:, :frames]
        return float_to_int16(audio[: frames * c.hop_length]), np.ascontiguousarray(mel, dtype=np.float32)


def _read_gta_mel(path: Path, config: MelConfig) -> np.ndarray:
    try:
        mel = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise AudioError(f"{path}: cannot read GTA mel ({exc})") from None
    if mel.ndim != 2 or config.n_mels not in mel.shape:
        raise AudioError(f"{path}: GTA mel of shape {mel.shape} does not have n_mels={config.n_mels}")
    if mel.shape[0] != config.n_mels:
        mel = mel.T
    if not np.isfinite(mel).all():
        raise AudioError(f"{path}: GTA mel contains NaN or Inf")
    return mel.astype(np.float32)


def load_features(
    utterances: list[Utterance], cache: FeatureCache, min_frames: int = 1, progress: bool = False
) -> tuple[list[Features], Counter]:
    """Features of every usable utterance, and a count of skip reasons."""
    from tqdm import tqdm

    kept, skipped = [], Counter()
    for utt in tqdm(utterances, desc="features", unit="file", disable=not progress, leave=False):
        try:
            feats = cache.load(utt)
        except AudioError as exc:
            log.warning("skipped %s", exc)
            skipped[_reason(str(exc))] += 1
            continue
        if feats.frames < min_frames:
            log.warning("skipped %s: too short (%d frames, need %d)", utt.audio_path, feats.frames, min_frames)
            skipped["too short"] += 1
            continue
        kept.append(feats)
    return kept, skipped


def _reason(message: str) -> str:
    for reason in ("silent", "too short", "sample rate", "GTA mel", "NaN"):
        if reason in message:
            return reason
    return "unreadable"


def summary_line(
    source: str, train: list[Features], valid: list[Features], skipped: Counter, hop: int, rate: int
) -> str:
    seconds = sum(f.frames for f in train + valid) * hop / rate
    line = f"data: {len(train)} train + {len(valid)} valid utterances ({seconds / 60:.1f} min) from {source}"
    if skipped:
        line += f"; skipped {sum(skipped.values())}: " + ", ".join(f"{n} {r}" for r, n in sorted(skipped.items()))
    return line


# ---- training segments -----------------------------------------------------------------------


def mel_window(mel: np.ndarray, start: int, stop: int) -> np.ndarray:
    """mel[:, start:stop] with edge frames repeated where the range leaves the utterance."""
    frames = mel.shape[1]
    index = np.clip(np.arange(start, stop), 0, frames - 1)
    return np.asarray(mel[:, index], dtype=np.float32)


def f0_window(f0: np.ndarray, start: int, frames: int) -> np.ndarray:
    """f0[start:start + frames] float32, zero (unvoiced) past the end of the utterance."""
    out = np.zeros(frames, dtype=np.float32)
    known = np.asarray(f0[start : start + frames], dtype=np.float32)
    out[: len(known)] = known
    return out


class SegmentDataset(Dataset):
    """Random hop-aligned segments, one per utterance per epoch.

    item -> (mel [n_mels, segment_frames + 2 * context] float32, audio [segment_frames * hop] float32),
    and f0 [segment_frames] float32 (Hz, 0 beyond the utterance) when every utterance has one.
    """

    def __init__(self, features: list[Features], segment_frames: int, context: int, hop: int) -> None:
        if not features:
            raise ManifestError("no usable training utterances")
        self.features = features
        self.segment_frames = segment_frames
        self.context = context
        self.hop = hop
        self.with_f0 = all(f.f0 is not None for f in features)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        feats = self.features[index]
        spare = max(0, feats.frames - self.segment_frames)
        start = int(torch.randint(0, spare + 1, ()).item())
        return self.segment(feats, start)

    def segment(self, feats: Features, start: int) -> tuple[torch.Tensor, ...]:
        stop = start + self.segment_frames
        mel = mel_window(feats.mel, start - self.context, stop + self.context)
        audio = np.zeros(self.segment_frames * self.hop, dtype=np.float32)
        piece = np.asarray(feats.audio[start * self.hop : stop * self.hop], dtype=np.float32) / 32768.0
        audio[: len(piece)] = piece  # utterances shorter than a segment are zero-padded
        if not self.with_f0:
            return torch.from_numpy(mel), torch.from_numpy(audio)
        f0 = f0_window(feats.f0, start, self.segment_frames)
        return torch.from_numpy(mel), torch.from_numpy(audio), torch.from_numpy(f0)
