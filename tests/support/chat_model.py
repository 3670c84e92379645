"""A tiny chat model made offline, and ``transformers serve`` serving it on a free loopback port.

The model: a 2-layer, 32-wide Llama with random weights and no EOS token (so every request generates
exactly ``max_tokens``), and a BPE tokenizer trained here with ``tokenizers`` on sentences of the
words the benchmark's prompts are made of, wrapped as a ``PreTrainedTokenizerFast`` with a chat
template; both saved with ``save_pretrained`` into one directory. Built in a child process
(``python -m tests.support.chat_model DIR``) so the test process never imports torch.

``transformers serve DIR`` (5.24): the positional argument is ``force_model``; a local directory is
loaded as is (``ModelManager.process_model_name`` keeps existing paths), so the request's ``model``
must be that same path. Flags used: ``--host``, ``--port``, ``--device cpu``. Readiness: ``GET /health``.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from accelerate_core.endpoint.stub import stop_process

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)


def build(directory: Path) -> None:
    """Train the tokenizer, build the model, save both into ``directory`` (imports torch: run in a child)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from accelerate_core.endpoint.prompts import WORDS

    rng = random.Random(0)
    corpus = [" ".join(rng.choices(WORDS, k=12)) for _ in range(400)]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<unk>", "<s>", "</s>", "<pad>"])
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
    )  # fmt: skip
    fast.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=1, eos_token_id=None, pad_token_id=3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = None
    model.save_pretrained(directory)


def build_in_child(directory: Path) -> Path:
    """Build the model in a fresh interpreter; return ``directory``."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.chat_model", str(directory)],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"building the tiny chat model failed:\n{done.stderr[-3000:]}")
    return directory


class ServeProcess:
    """``transformers serve`` on a free loopback port, serving one local model directory."""

    def __init__(self, model_dir: Path, port: int, log: Path) -> None:
        binary = shutil.which("transformers", path=str(Path(sys.executable).parent))
        if binary is None:
            raise RuntimeError("no `transformers` CLI: install the serving extra (`pip install -e '.[serving]'`)")
        self.model_dir = model_dir
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self._log = log.open("w")
        command = [binary, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.log = log

    def wait_ready(self, timeout_s: float = 240.0) -> None:
        """Poll ``/health`` until it answers 200; raise with the server's log when it dies or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log.read_text()[-3000:]
                raise RuntimeError(f"transformers serve exited ({self.proc.returncode}):\n{log}")
            try:
                if httpx2.get(f"{self.url}/health", timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"transformers serve not ready within {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """Terminate the server (kill it if it does not stop within 10 s)."""
        stop_process(self.proc, 10.0)
        self._log.close()


if __name__ == "__main__":
    build(Path(sys.argv[1]))
