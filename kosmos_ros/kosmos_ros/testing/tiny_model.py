# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Build a tiny, randomly initialised KOSMOS-2 with the real tokenizer, offline, in seconds.

It has the released model's vocabulary (65,037 tokens), image size, location grid and number
of image tokens, with tiny hidden sizes: prompts tokenize and decode exactly as with the real
model, so tests and the labelled demo fallback run the real loading, prompting, generation and
post-processing code. Its words are random: it is not a substitute for the real weights.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import shutil
import tempfile

TOKENIZER_FILE = 'sentencepiece.bpe.model'
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
TINY_LABEL = 'TINY RANDOM TEST MODEL (not KOSMOS-2 weights; its words are random)'


def find_tokenizer_model() -> Path:
    """Locate the KOSMOS-2 SentencePiece model shipped with kosmos_ros."""
    candidates = []
    if os.environ.get('KOSMOS_ROS_TOKENIZER_MODEL'):
        candidates.append(Path(os.environ['KOSMOS_ROS_TOKENIZER_MODEL']))
    here = Path(__file__).resolve().parent
    candidates.append(here.parent / 'test' / 'data' / 'kosmos2_tokenizer' / TOKENIZER_FILE)
    try:
        from ament_index_python.packages import get_package_share_directory
        share = Path(get_package_share_directory('kosmos_ros'))
        candidates.append(share / 'test_data' / 'kosmos2_tokenizer' / TOKENIZER_FILE)
    except (ImportError, LookupError, ValueError, OSError):
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError('KOSMOS-2 tokenizer model not found; looked in: '
                            + ', '.join(str(p) for p in candidates))


def build_tiny_model(out_dir: str | Path, tokenizer_model: str | Path | None = None,
                     seed: int = 0, hidden: int = 32) -> Path:
    """Save a tiny random KOSMOS-2 and its processor to ``out_dir`` (safetensors)."""
    import torch
    from transformers import (CLIPImageProcessor, Kosmos2Config,
                              Kosmos2ForConditionalGeneration, Kosmos2Processor,
                              XLMRobertaTokenizer)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = Path(tokenizer_model) if tokenizer_model else find_tokenizer_model()
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(source, Path(tmp) / TOKENIZER_FILE)
        tokenizer = XLMRobertaTokenizer.from_pretrained(tmp)
    image_processor = CLIPImageProcessor(
        do_resize=True, size={'height': 224, 'width': 224}, resample=3,
        do_center_crop=True, crop_size={'height': 224, 'width': 224},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True)
    processor = Kosmos2Processor(image_processor, tokenizer)
    config = Kosmos2Config(
        text_config=dict(vocab_size=len(processor.tokenizer), embed_dim=hidden, layers=2,
                         ffn_dim=2 * hidden, attention_heads=4),
        vision_config=dict(hidden_size=hidden, intermediate_size=2 * hidden,
                           num_hidden_layers=2, num_attention_heads=4, image_size=224,
                           patch_size=14),
        latent_query_num=64)
    torch.manual_seed(seed)
    model = Kosmos2ForConditionalGeneration(config).eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def tiny_model_path() -> Path:
    """Return the folder of the tiny random model, building it there once.

    ``$KOSMOS_ROS_TINY_MODEL_DIR`` names the folder; by default it is
    ``$XDG_CACHE_HOME/kosmos_ros/tiny_model`` (``~/.cache/...``).
    """
    folder = os.environ.get('KOSMOS_ROS_TINY_MODEL_DIR')
    if folder:
        path = Path(folder)
    else:
        cache = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache')
        path = cache / 'kosmos_ros' / 'tiny_model'
    if (path / 'config.json').is_file() and any(path.glob('*.safetensors')):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix='.tiny_model-', dir=path.parent))
    build_tiny_model(staging)
    try:
        os.replace(staging, path)
    except OSError:  # another process finished first, or an unusable folder is there
        shutil.rmtree(staging, ignore_errors=True)
        if not (path / 'config.json').is_file():
            raise
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir', help='folder to write the model to')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    path = build_tiny_model(args.out_dir, seed=args.seed)
    print(f'wrote {TINY_LABEL} to {path}')


if __name__ == '__main__':
    main()
