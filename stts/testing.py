"""Helpers shared by tests and benchmarks.

- a real ``stts serve`` process on loopback (:func:`spawn_server`, :func:`free_port`,
  :func:`wait_ready`);
- a CTC model directory for the Wav2Vec2 engine (:func:`build_ctc_model`), because no
  package ships CTC weights. It needs ``torch``, ``transformers`` and ``onnx`` (the dev
  extra), imported only when called.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import httpx


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float = 120.0) -> None:
    """Poll /ready until it answers 200; fail if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not become ready in {timeout:.0f} s")


def spawn_server(
    port: int,
    env: dict[str, str] | None = None,
    *,
    stderr: int | IO[bytes] | None = subprocess.DEVNULL,
    timeout: float = 120.0,
) -> subprocess.Popen[bytes]:
    """Start ``python -m stts.cli serve`` on 127.0.0.1:``port`` and wait until it is ready.

    ``env`` is added to this process's environment (``STTS_*`` settings). The command
    line is fixed; only the environment varies.
    """
    full_env = {**os.environ, "STTS_PORT": str(port), "STTS_HOST": "127.0.0.1", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stts.cli", "serve"],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout)
    except BaseException:
        proc.kill()
        proc.wait(30)
        raise
    return proc


def joined_speech_wav(clips: Sequence[Any], seconds: float, offset: int = 0) -> bytes:
    """A 16 kHz mono 16-bit WAV of ``seconds``: the clips (16 kHz float32 arrays) one
    after another from ``offset``, 0.4 s of silence between them, repeated as needed
    (tests and benches build long recordings from the corpus with it)."""
    import wave

    import numpy as np

    pause = np.zeros(int(0.4 * 16_000), np.float32)
    pieces: list[Any] = []
    total, target, index = 0, int(seconds * 16_000), offset
    while total < target:
        clip = clips[index % len(clips)]
        pieces += [clip, pause]
        total += len(clip) + len(pause)
        index += 1
    samples = np.concatenate(pieces)[:target]
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


CTC_CHARS = "ETAONISRHDLUMCWFGYPBVK'XJQZ"
TINY_CTC = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (16,) * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}


def export_ctc_onnx(model: Any, path: Path, *, attention_mask: bool = False) -> None:
    """Export a ``Wav2Vec2ForCTC`` to ONNX the way a user would (dynamic length)."""
    import torch

    args: tuple[Any, ...] = (torch.zeros(1, 16_000),)
    names = ["input_values"]
    axes = {"input_values": {1: "samples"}, "logits": {1: "frames"}}
    if attention_mask:
        args += (torch.ones(1, 16_000, dtype=torch.long),)
        names.append("attention_mask")
        axes["attention_mask"] = {1: "samples"}
    with warnings.catch_warnings():  # the TorchScript exporter warns about its own future
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def build_ctc_model(out: Path, *, tiny: bool = True, seed: int = 0) -> Path:
    """Write a Wav2Vec2ForCTC with random weights, its processor and ``model.onnx`` to ``out``.

    ``tiny`` gives a 2-layer model small enough for tests; otherwise the wav2vec2-base
    architecture (95 M parameters) for speed and memory measurements. The random head is
    shaped like a trained one: decisive logits (clear arg-max margins), never ``<s>``,
    ``</s>`` or ``<unk>``, and a word delimiter often enough to make words. The directory
    is the Hugging Face layout that ``optimum-cli export onnx`` writes.
    """
    import torch

    # untyped third-party API, and only a test helper: handled as Any
    transformers: Any = importlib.import_module("transformers")
    out.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4}
    vocab |= {c: i + 5 for i, c in enumerate(CTC_CHARS)}
    (out / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(out / "vocab.json"), word_delimiter_token="|")
    extractor = transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True
    )
    transformers.Wav2Vec2Processor(
        feature_extractor=extractor, tokenizer=tokenizer
    ).save_pretrained(out)
    config = transformers.Wav2Vec2Config(
        vocab_size=len(vocab), pad_token_id=0, **(TINY_CTC if tiny else {})
    )
    torch.manual_seed(seed)
    model = transformers.Wav2Vec2ForCTC(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
        model.lm_head.bias[1:4] = -100.0
        model.lm_head.bias[4] = 1.0
    model.save_pretrained(out)
    export_ctc_onnx(model, out / "model.onnx")
    return out
