"""Audio encoding with PyAV: int16 mono samples -> mp3, opus, aac, flac, wav or OpenAI's raw 24 kHz pcm."""

from __future__ import annotations

import io
import wave
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy comes with the [local] extra; a base install imports this module without it
    import numpy as np

# format -> (container, codec, output sample rate or None to keep)
_CONTAINERS = {"mp3": ("mp3", "libmp3lame", None), "opus": ("ogg", "libopus", 48000),
               "aac": ("adts", "aac", None), "flac": ("flac", "flac", None)}
CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
                 "wav": "audio/wav", "pcm": "audio/pcm"}
PCM_RATE = 24000  # OpenAI's pcm: 24 kHz, 16-bit little-endian, mono


def _resample(samples: np.ndarray, rate: int, out_rate: int, fmt: str = "s16"):
    import av
    import numpy as np

    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.int16), format="s16", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format=fmt, layout="mono", rate=out_rate)
    return [*resampler.resample(frame), *resampler.resample(None)]


def encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    import numpy as np

    if fmt == "wav":
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(samples.astype("<i2").tobytes())
        return buf.getvalue()
    if fmt == "pcm":
        frames = _resample(samples, rate, PCM_RATE) if rate != PCM_RATE else None
        data = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]) if frames else samples
        return data.astype("<i2").tobytes()
    import av

    container_name, codec, fixed_rate = _CONTAINERS[fmt]
    out_rate = fixed_rate or rate
    buf = io.BytesIO()
    with av.open(buf, "w", format=container_name) as container:
        stream = container.add_stream(codec, rate=out_rate)
        stream.layout = "mono"
        frames = _resample(samples, rate, out_rate, fmt=stream.format.name)
        # encoders take fixed-size frames; an AudioFifo cuts the stream into them
        fifo = av.AudioFifo()
        for f in frames:
            f.pts = None
            fifo.write(f)
        size = stream.codec_context.frame_size or 1024
        while fifo.samples:
            chunk = fifo.read(min(size, fifo.samples))
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def wav_to_samples(data: bytes) -> tuple[np.ndarray, int]:
    import numpy as np

    with wave.open(io.BytesIO(data), "rb") as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        raw = w.readframes(w.getnframes())
    samples = np.frombuffer(raw, dtype="<i2" if width == 2 else np.uint8)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return samples, rate
