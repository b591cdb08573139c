"""Mel projection: bring a vocoder's output to the mel it was given, keeping its phase.

A sampled excitation leaves each mel band's energy off the mel's by a few dB from frame to frame
(the network's distribution, not the mel, decides it), and intelligibility and quality measures
follow band energies closely. One iteration takes the STFT of the audio in the mel's own framing,
measures its mel, scales every bin by the ratio of the given mel to the measured one over the bands
the bin belongs to (the filterbank's transpose, normalised), and overlap-adds back. The audio keeps
its own phase and, within each band, its own fine structure (the harmonics the vocoder made); only
the band energies move. Iterating converges on audio whose mel is the given one, as Griffin-Lim's
iterations do, but started from the vocoder's phase rather than a random one. Bins above the
filterbank's fmax are left alone: the mel says nothing about them.

Streaming (`MelProjector`): iteration i + 1 of a sample is final once iteration i is final over
every frame that covers it, so each iteration runs `n_fft - hop` samples behind the one before
(`projection_lag_samples`; 20 iterations at n_fft 1024, hop 256: 15,488 samples, 0.70 s at 22.05 kHz).
Every frame is computed once per iteration whatever the chunking, and every sum runs in a fixed
order of its own (the band sums are explicit adds, not a matrix product, whose blocking would follow
the number of frames in a call), so streamed and whole-utterance projections agree sample for sample.
`mel_projection` is the same projector fed the whole utterance at once; `reference_mel_projection`
is the plain whole-signal version (matrix products, index_add_) it is tested against.
"""

from __future__ import annotations

import torch

from .features import MelConfig, mel_filterbank

__all__ = [
    "MelProjector",
    "mel_projection",
    "mel_magnitude",
    "projection_lag_samples",
    "projection_lookahead_frames",
    "reference_mel_projection",
]

MAX_GAIN = 20.0  # per-band correction bound per iteration (26 dB): a silent band is not blown up to noise


def mel_magnitude(mel: torch.Tensor, config: MelConfig) -> torch.Tensor:
    """Log-mel of `config` [.., n_mels, F] -> the filterbank's output it was the log of (float64)."""
    values = mel.double() * config.std + config.mean
    values = values / config.log_multiplier
    return torch.exp(values) if config.log_base == "e" else torch.pow(10.0, values)


def _window(config: MelConfig) -> torch.Tensor:
    """The forward STFT's window: a Hann window of win_length zero-padded to n_fft, centred."""
    window = torch.zeros(config.n_fft, dtype=torch.float64)
    offset = (config.n_fft - config.win_length) // 2
    window[offset : offset + config.win_length] = torch.hann_window(config.win_length, dtype=torch.float64)
    return window


def projection_lag_samples(config: MelConfig, iterations: int) -> int:
    """Samples a streamed projection's output runs behind its input (audio final up to sample A gives
    projected audio final up to A - lag, for A on a frame boundary)."""
    hop, pad = config.hop_length, config.edge_padding
    start = (1 << 20) // hop * hop  # far from both edges
    final = start + pad  # padded end of the final input
    for _ in range(iterations):
        frames = (final - config.n_fft) // hop + 1
        final = frames * hop
    return start - (final - pad) if iterations else 0


def projection_lookahead_frames(config: MelConfig, iterations: int) -> int:
    """Mel frames a stream holds back for the projection: its lag rounded up to whole frames."""
    return -(-projection_lag_samples(config, iterations) // config.hop_length)


class _BandSums:
    """Sparse, fixed-order sums over the triangular filterbank: per frame, measured mel = filters @ |X|,
    and the gain per bin = filters^T @ ratio (frames in the last dimension). Each output is a sum of
    at most `width` terms folded in halves in a fixed order, so a frame's numbers do not depend on how
    many frames are in the call."""

    def __init__(self, filters: torch.Tensor) -> None:
        n_mels, bins = filters.shape
        self.band_index, self.band_weight = self._gather(filters)  # [n_mels, W, 1]
        self.bin_index, self.bin_weight = self._gather(filters.t())  # [bins, V, 1]

    @staticmethod
    def _gather(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each row of `matrix` [rows, cols], its non-zero columns (padded with column 0 at weight 0,
        which adds an exact zero)."""
        counts = (matrix != 0).sum(1)
        width = 1 << max(0, int(counts.max()) - 1).bit_length()  # a power of two: the fold needs no odd step
        index = torch.zeros(matrix.shape[0], width, dtype=torch.long)
        weight = torch.zeros(matrix.shape[0], width, dtype=matrix.dtype)
        for row in range(matrix.shape[0]):
            columns = torch.nonzero(matrix[row]).flatten()
            index[row, : len(columns)] = columns
            weight[row, : len(columns)] = matrix[row, columns]
        return index, weight[..., None]  # broadcast over the frames

    @staticmethod
    def _sum(values: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """[B, cols, n] -> [B, rows, n]: sum_k values[:, index[r, k]] * weight[r, k] for each row r, the
        terms folded in halves (a fixed order). Rows of frames are gathered whole (frames last: a
        gather of whole rows costs a fraction of one across the last dimension)."""
        terms = values.index_select(-2, index.flatten()).unflatten(-2, index.shape) * weight
        while terms.shape[-2] > 1:  # [B, rows, width, n], width a power of two
            half = terms.shape[-2] // 2
            terms = terms[..., :half, :] + terms[..., half:, :]
        return terms[..., 0, :]

    def bands(self, magnitude: torch.Tensor) -> torch.Tensor:
        """[B, bins, n] -> [B, n_mels, n]"""
        return self._sum(magnitude, self.band_index, self.band_weight)

    def bins(self, ratio: torch.Tensor) -> torch.Tensor:
        """[B, n_mels, n] -> [B, bins, n]"""
        return self._sum(ratio, self.bin_index, self.bin_weight)


class _Iteration:
    """One projection iteration over a growing signal: it takes input samples (final values of the
    previous iteration) and returns the samples of its own output that no later input can change.

    Output hop-block j (padded samples [j hop, (j + 1) hop)) is the sum of the pieces of frames j - Q + 1
    .. j (Q = ceil(n_fft / hop)), so it is final once frame j is computed; the last Q - 1 frames' pieces
    carry over to the next call.
    """

    def __init__(self, projector: MelProjector, min_frames: int) -> None:
        self.p = projector
        self.min_frames = min_frames  # frames computed per call, at least (all that remain at the end)
        batch, q, hop = projector.batch, projector.blocks_per_frame, projector.hop
        self.buffer = torch.zeros(batch, 0, dtype=torch.float64)  # input samples from self.buffer_start on
        self.buffer_start = 0
        self.received = 0  # input samples received
        self.frames = 0  # frames computed
        self.emitted = 0  # output samples returned
        self.tail = torch.zeros(batch, q - 1, q, hop, dtype=torch.float64)  # pieces of the last Q - 1 frames

    def push(self, samples: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """samples [B, n] float64 -> the newly final output [B, m]. length: the utterance's total samples
        once the input is complete (then every remaining sample is returned)."""
        p = self.p
        if samples.shape[1]:
            self.buffer = torch.cat([self.buffer, samples], dim=1)
            self.received += samples.shape[1]
        if length is None:
            # frame f reads padded samples up to f hop + n_fft, i.e. input up to f hop + n_fft - pad
            ready = (p.pad + self.received - p.n_fft) // p.hop + 1
            ready = min(ready, p.mel_frames)
            if p.config.edge_pad_mode == "reflect" and self.received <= p.pad:
                ready = 0  # the left edge's reflection reads samples 1 .. pad
            if ready - self.frames < self.min_frames:
                ready = self.frames  # wait for a batch: a call costs more than a frame
            out = self._frames(max(0, ready - self.frames), None)
        else:
            total = p.config.num_frames(length)
            out = self._frames(total - self.frames, length)
        self._trim()
        return out

    def _frames(self, count: int, length: int | None) -> torch.Tensor:
        """Compute `count` frames from self.frames on (and, at the end, the blocks after the last frame)."""
        p = self.p
        first, hop, q = self.frames, p.hop, p.blocks_per_frame
        if count > 0:
            pieces = p.frame_pieces(self._padded(first * hop, (first + count - 1) * hop + p.n_fft, length), first)
        else:
            count, pieces = 0, torch.zeros(p.batch, 0, q, hop, dtype=torch.float64)
        if length is None:
            limit, extra = None, 0
        else:  # blocks past the last frame, up to the end of the signal, take zero pieces
            limit = first + count
            extra = max(0, -(-(p.pad + length) // hop) - limit)
            pieces = torch.cat([pieces, pieces.new_zeros(pieces.shape[0], extra, q, hop)], dim=1)
        blocks = count + extra
        if blocks <= 0:
            return self._clip(torch.zeros(p.batch, 0, dtype=torch.float64), first, length)
        stacked = torch.cat([self.tail, pieces], dim=1)  # frames first - Q + 1 .. first + blocks - 1
        summed = stacked[:, :blocks, q - 1]  # frame j - Q + 1 first, then the later ones
        for k in range(q - 2, -1, -1):
            summed = summed + stacked[:, q - 1 - k : q - 1 - k + blocks, k]
        if first >= q - 1 and limit is None:  # every frame of every block exists: the interior's overlap
            overlap = p.interior_overlap.expand(blocks, hop)
        else:
            overlap = p.overlap(torch.arange(first, first + blocks), limit)
        self.tail = stacked[:, stacked.shape[1] - (q - 1) :]
        self.frames = first + count
        out = (summed / overlap.clamp_min(1e-8)).reshape(p.batch, blocks * hop)
        return self._clip(out, first, length)

    def _clip(self, out: torch.Tensor, first_block: int, length: int | None) -> torch.Tensor:
        """Padded blocks from `first_block` on -> the signal's samples among them (edges cut)."""
        p = self.p
        start = first_block * p.hop - p.pad  # signal index of out[:, 0]
        end = start + out.shape[1] if length is None else min(start + out.shape[1], length)
        lo = max(start, self.emitted)
        out = out[:, lo - start : max(lo, end) - start]
        self.emitted = max(self.emitted, end)
        return out

    def _padded(self, lo: int, hi: int, length: int | None) -> torch.Tensor:
        """Padded signal [B, hi - lo] (padded index lo .. hi), the edges padded as the mel's STFT pads them."""
        p = self.p
        if lo >= p.pad and (length is None or hi - p.pad <= length):  # no edge in reach: a plain slice
            return self.buffer[:, lo - p.pad - self.buffer_start : hi - p.pad - self.buffer_start]
        index = torch.arange(lo, hi) - p.pad
        inside = index >= 0
        if length is not None:
            inside &= index < length
        mode = p.config.edge_pad_mode
        if mode == "reflect":
            index = index.abs()
            if length is not None:
                index = torch.where(index >= length, 2 * (length - 1) - index, index)
        else:  # "replicate", or "constant" whose padding is masked to zero below
            index = index.clamp(0, (length if length is not None else self.received) - 1)
        values = self.buffer[:, index - self.buffer_start]
        return torch.where(inside, values, 0.0) if mode == "constant" else values

    def _trim(self) -> None:
        """Drop input no later frame reads: the next frame starts at signal index frames * hop - pad (while
        that is negative, the left edge's padding still reads the first samples; the right edge's, at the
        end, reads the last pad + 1, which lie after it)."""
        keep = self.frames * self.p.hop - self.p.pad
        if keep > self.buffer_start:
            self.buffer = self.buffer[:, keep - self.buffer_start :]
            self.buffer_start = keep


class MelProjector:
    """The mel projection as a stream: `push_mel` frames, `push` the vocoded audio as it comes, `close`.

    batch: streams projected together (each on its own; their numbers do not mix).
    min_frames: the first iteration waits for this many new frames before it computes them (one call
        costs about as much as a frame: streams of 1-frame chunks run faster projecting 4 at a time,
        for up to min_frames - 1 frames more latency); later iterations take what the one before gives.
    The output is final audio: float32 [B, m] in [-1, 1], running `lag_samples` behind the input
    (`projection_lag_samples`; at most min_frames - 1 frames more). Concatenated, it equals
    `mel_projection` of the whole utterance, whatever min_frames.
    """

    def __init__(self, config: MelConfig, iterations: int, batch: int = 1, min_frames: int = 1) -> None:
        if iterations < 0:
            raise ValueError(f"mel projection iterations must be >= 0, got {iterations}")
        self.config, self.iterations, self.batch = config, int(iterations), int(batch)
        self.hop, self.n_fft, self.pad = config.hop_length, config.n_fft, config.edge_padding
        self.blocks_per_frame = -(-self.n_fft // self.hop)
        self.lag_samples = projection_lag_samples(config, self.iterations)
        self.window = _window(config)
        q, hop = self.blocks_per_frame, self.hop
        self.window_square = torch.nn.functional.pad(self.window.square(), (0, q * hop - self.n_fft)).reshape(q, hop)
        filters = mel_filterbank(config).to(torch.float64)  # [n_mels, K]
        coverage = filters.sum(0)[:, None]  # [K, 1]: 0 above fmax
        self.inverse_coverage = torch.where(coverage > 0, 1.0 / coverage.clamp_min(1e-12), 0.0)
        self.uncovered = (coverage <= 0).double()
        self.sums = _BandSums(filters)
        self.interior_overlap = self.overlap(torch.tensor([self.blocks_per_frame - 1]), None)  # [1, hop]
        self.target = torch.zeros(self.batch, config.n_mels, 0, dtype=torch.float64)  # the filterbank's output
        self.target_start = 0  # frame index of target[..., 0]: frames every iteration has computed are dropped
        self.mel_frames = 0
        self.samples_in = 0
        if min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {min_frames}")
        self.stages = [_Iteration(self, min_frames if i == 0 else 1) for i in range(self.iterations)]
        self.closed = False

    def push_mel(self, mel: torch.Tensor) -> None:
        """mel [B, n_mels, k]: the next k frames of the log-mel the audio is vocoded from."""
        if mel.dim() != 3 or mel.shape[0] != self.batch or mel.shape[1] != self.config.n_mels:
            raise ValueError(f"need a mel [{self.batch}, {self.config.n_mels}, frames], got {tuple(mel.shape)}")
        self.target = torch.cat([self.target, mel_magnitude(mel.detach().cpu(), self.config)], dim=2)
        self.mel_frames += mel.shape[2]

    def push(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, n]: the next vocoded samples -> the projected samples now final [B, m] float32."""
        if self.closed:
            raise RuntimeError("this mel projector is closed")
        if audio.dim() != 2 or audio.shape[0] != self.batch:
            raise ValueError(f"need audio [{self.batch}, samples], got {tuple(audio.shape)}")
        audio = audio.detach().cpu()
        self.samples_in += audio.shape[1]
        if not self.iterations:
            return audio.float()
        return self._run(audio.double(), None)

    def close(self) -> torch.Tensor:
        """The utterance is complete: the rest of the projected audio [B, m] float32.

        Audio no longer than the STFT's edge padding cannot be framed; it comes back as it went in."""
        if self.closed:
            raise RuntimeError("this mel projector is closed")
        self.closed = True
        length = self.samples_in
        expected = self.config.num_samples(self.mel_frames) if self.mel_frames else 0
        if self.iterations and length != expected:
            raise ValueError(f"a mel of {self.mel_frames} frames gives {expected} samples, got audio of {length}")
        if not self.iterations:
            return torch.zeros(self.batch, 0)
        if length <= self.pad:  # nothing was framed, so the first iteration still holds all of the input
            return self.stages[0].buffer.float()
        return self._run(torch.zeros(self.batch, 0, dtype=torch.float64), length)

    def _run(self, samples: torch.Tensor, length: int | None) -> torch.Tensor:
        for stage in self.stages:
            samples = stage.push(samples, length)
        done = self.stages[-1].frames  # the last iteration is the furthest behind
        if done > self.target_start:
            self.target = self.target[:, :, done - self.target_start :]
            self.target_start = done
        return samples.clamp(-1.0, 1.0).float()

    def overlap(self, blocks: torch.Tensor, limit: int | None) -> torch.Tensor:
        """The squared windows summed over each hop-block's frames (those in 0 .. limit - 1), in the
        order the pieces are summed: [len(blocks), hop]."""
        q = self.blocks_per_frame
        total = torch.zeros(len(blocks), self.hop, dtype=torch.float64)
        for k in range(q - 1, -1, -1):
            frame = blocks - k
            valid = (frame >= 0) if limit is None else (frame >= 0) & (frame < limit)
            total = total + torch.where(valid[:, None], self.window_square[k], 0.0)
        return total

    def frame_pieces(self, padded: torch.Tensor, first: int) -> torch.Tensor:
        """Padded signal [B, (n - 1) hop + n_fft] of frames first .. first + n - 1 -> each frame's
        projected, windowed piece [B, n, Q, hop] (zero past n_fft)."""
        config, hop, q = self.config, self.hop, self.blocks_per_frame
        if padded.shape[1] < self.n_fft:
            return padded.new_zeros(self.batch, 0, q, hop)
        frames = padded.unfold(-1, self.n_fft, hop)  # [B, n, n_fft]
        count = frames.shape[1]
        spectrum = torch.fft.rfft(frames * self.window, dim=-1)  # [B, n, K]
        magnitude = spectrum.abs()
        if config.power != 1.0:
            magnitude = magnitude.pow(config.power)
        magnitude = magnitude.transpose(1, 2).contiguous()  # [B, K, n]
        measured = self.sums.bands(magnitude)  # [B, n_mels, n]
        target = self.target[:, :, first - self.target_start : first - self.target_start + count]
        ratio = (target / measured.clamp_min(1e-12)).clamp(1.0 / MAX_GAIN, MAX_GAIN)
        # the bands' mean ratio per bin; 1 for bins no band covers (above fmax)
        gain = torch.addcmul(self.uncovered, self.sums.bins(ratio), self.inverse_coverage).transpose(1, 2)
        if config.power != 1.0:
            gain = gain.pow(1.0 / config.power)
        pieces = torch.fft.irfft(spectrum * gain, n=self.n_fft, dim=-1) * self.window  # [B, n, n_fft]
        pieces = torch.nn.functional.pad(pieces, (0, q * hop - self.n_fft))
        return pieces.reshape(self.batch, count, q, hop)


def mel_projection(audio: torch.Tensor, mel: torch.Tensor, config: MelConfig, iterations: int) -> torch.Tensor:
    """audio [B, T] float, mel [B, n_mels, F] (the log-mel it was vocoded from, unpadded) -> audio [B, T]
    float32 in [-1, 1] after `iterations` projections (0 returns the audio unchanged; so does audio
    too short to frame, no longer than the STFT's edge padding).

    T must be F * hop (`center=False`) or (F - 1) * hop (`center=True`), the lengths a vocoder gives.
    """
    if iterations < 0:
        raise ValueError(f"mel projection iterations must be >= 0, got {iterations}")
    if audio.dim() != 2 or mel.dim() != 3 or mel.shape[0] != audio.shape[0] or mel.shape[1] != config.n_mels:
        raise ValueError(
            f"need audio [B, T] and mel [B, {config.n_mels}, F] of the same batch, got {tuple(audio.shape)} "
            f"and {tuple(mel.shape)}"
        )
    length = config.num_samples(mel.shape[2])
    if audio.shape[1] != length:
        raise ValueError(f"a mel of {mel.shape[2]} frames gives {length} samples, got audio of {audio.shape[1]}")
    if iterations == 0 or audio.shape[1] <= config.edge_padding:
        return audio
    projector = MelProjector(config, iterations, batch=audio.shape[0])
    projector.push_mel(mel)
    return torch.cat([projector.push(audio), projector.close()], dim=1)


def reference_mel_projection(
    audio: torch.Tensor, mel: torch.Tensor, config: MelConfig, iterations: int
) -> torch.Tensor:
    """The plain whole-signal projection `MelProjector` must agree with: every iteration pads the whole
    signal, frames it, applies the gains with matrix products over the filterbank and overlap-adds
    with index_add_. Same contract as `mel_projection`; its sums run in another order, so the two agree
    to float64 rounding, not bit for bit (tests/test_mel_projection.py)."""
    length, hop, n_fft, pad = config.num_samples(mel.shape[2]), config.hop_length, config.n_fft, config.edge_padding
    if audio.shape[1] != length:
        raise ValueError(f"a mel of {mel.shape[2]} frames gives {length} samples, got audio of {audio.shape[1]}")
    if iterations == 0 or length <= pad:
        return audio
    frames, window = mel.shape[2], _window(config)
    filters = mel_filterbank(config).to(torch.float64)  # [n_mels, K]
    coverage = filters.sum(0)
    target = mel_magnitude(mel.cpu(), config).transpose(1, 2)  # [B, F, n_mels]
    span = (frames - 1) * hop + n_fft
    index = (torch.arange(frames)[:, None] * hop + torch.arange(n_fft)).flatten()  # [F * n_fft]
    overlap = torch.zeros(span, dtype=torch.float64).index_add_(0, index, window.square().repeat(frames))
    x = audio.double().cpu()
    for _ in range(iterations):
        if config.edge_pad_mode == "constant":
            padded = torch.nn.functional.pad(x, (pad, pad))
        else:
            padded = torch.nn.functional.pad(x.unsqueeze(1), (pad, pad), mode=config.edge_pad_mode).squeeze(1)
        spectrum = torch.fft.rfft(padded.unfold(-1, n_fft, hop)[:, :frames] * window, dim=-1)  # [B, F, K]
        measured = spectrum.abs().pow(config.power) @ filters.t()  # [B, F, n_mels]
        ratio = (target / measured.clamp_min(1e-12)).clamp(1.0 / MAX_GAIN, MAX_GAIN)
        gain = torch.where(coverage > 0, (ratio @ filters) / coverage.clamp_min(1e-12), torch.ones_like(coverage))
        pieces = torch.fft.irfft(spectrum * gain.pow(1.0 / config.power), n=n_fft, dim=-1) * window
        summed = torch.zeros(x.shape[0], span, dtype=torch.float64).index_add_(1, index, pieces.flatten(1))
        x = (summed / overlap.clamp_min(1e-8))[:, pad : pad + length]
    return x.clamp(-1.0, 1.0).float()
