"""``chaosbench make-model OUT_DIR``: write the tiny random Llama model the vllm engine serves."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("make-model")
    def make_model_cmd(
        out_dir: Path = typer.Argument(..., help="Directory to write (created; files in it are overwritten)."),
        vocab: int = typer.Option(512, help="Vocabulary size (the BPE tokenizer is trained to this size)."),
        hidden: int = typer.Option(128, help="Hidden size."),
        layers: int = typer.Option(2, help="Decoder layers."),
        heads: int = typer.Option(2, help="Attention heads (hidden/heads must be 64 or 128 for vLLM on CPU)."),
        max_seq_len: int = typer.Option(512, "--max-seq-len", help="Maximum sequence length."),
        seed: int = typer.Option(0, help="Seed for the weights and the tokenizer corpus."),
        name: str = typer.Option("tiny-llama", help="Model name recorded in chaosbench-model.json."),
    ) -> None:
        """Generate a tiny random Llama-style model with a locally trained tokenizer (no downloads)."""
        from chaosbench.engines.vllm.model import TinyLlamaSpec, make_model

        spec = TinyLlamaSpec(vocab=vocab, hidden=hidden, layers=layers, heads=heads, intermediate=2 * hidden,
                             max_seq_len=max_seq_len, seed=seed)
        path = make_model(out_dir, spec, name=name)
        typer.echo(f"wrote {path} (vocab {vocab}, hidden {hidden}, {layers} layers, {heads} heads, "
                   f"head_dim {spec.head_dim})")
