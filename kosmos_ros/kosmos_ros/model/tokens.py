# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The tokenizer's side of the engine: prompts to ids, generated ids to a result.

:class:`TokenCodec` holds what the engine needs from KOSMOS-2's tokenizer:

- prompt ids exactly as the reference processor builds them (BOS, the image block of
  placeholders, the prompt), cached per prompt, and the check that user text yields no control
  token it does not spell (:meth:`TokenCodec.check_control_tokens`);
- the reference post-processing of a generated sequence (text, phrases, boxes), with each box
  scored by the tokens that named it and its corners ordered (:meth:`TokenCodec.result`).

It imports neither torch nor the model.
"""

from __future__ import annotations

from collections import OrderedDict
import math
from typing import Any

from kosmos_ros.datatypes import GroundedBox, GroundedPhrase, GroundingResult, Query, Timings
from kosmos_ros.errors import PromptError
from kosmos_ros.model.boxes import normalized_to_pixels, ordered_cells, patch_indices_to_normalized
from kosmos_ros.model.decoding import DecodedRow
from kosmos_ros.model.parsing import (caption_part, locate_box_tokens, LocationTokenIds,
                                      parse_grounded_text, strip_tags)
from kosmos_ros.model.prompts import CharReader, TAG_RE, TAG_TOKENS

PROMPT_CACHE_SIZE = 256


def char_reader(tokenizer: Any) -> CharReader:
    """Return how ``tokenizer`` reads single characters (its normaliser and vocabulary)."""
    backend = getattr(tokenizer, 'backend_tokenizer', None)
    normalizer = getattr(backend, 'normalizer', None) if backend is not None else None
    unk = tokenizer.unk_token_id

    def known(char: str) -> bool:
        return unk not in tokenizer(char, add_special_tokens=False)['input_ids']
    return CharReader(normalizer.normalize_str if normalizer is not None else None, known)


class TokenCodec:
    """Prompt ids and generated ids of KOSMOS-2, for one tokenizer."""

    def __init__(self, tokenizer: Any, num_image_tokens: int, num_patches: int = 1024):
        tok = self.tokenizer = tokenizer
        self.num_image_tokens = num_image_tokens
        first_image_id = tok.unk_token_id + 1
        self.image_ids = list(range(first_image_id, first_image_id + num_image_tokens))
        self.image_prefix = ' '.join(['<image>'] * (num_image_tokens + 1) + ['</image>'])
        self.eoi_id = tok.convert_tokens_to_ids('</image>')
        self.location_ids = LocationTokenIds(
            object_start=tok.convert_tokens_to_ids('<object>'),
            object_end=tok.convert_tokens_to_ids('</object>'),
            delimiter=tok.convert_tokens_to_ids('</delimiter_of_multi_objects/>'),
            first_patch=tok.convert_tokens_to_ids('<patch_index_0000>'),
            num_patches=num_patches)
        self.reader = char_reader(tok)
        self._special_ids = frozenset(tok.all_special_ids) | {
            tok.convert_tokens_to_ids('<image>'), self.eoi_id}
        self._first_added_id = tok.convert_tokens_to_ids(TAG_TOKENS[0])
        self._skipped_ids = frozenset(tok.all_special_ids)  # what decoding leaves out
        self._cache: OrderedDict[str, list[int]] = OrderedDict()

    def tokenize(self, prompt: str) -> list[int]:
        """Return the full prompt ids: BOS, the image block (placeholders), the prompt."""
        ids = self._cache.get(prompt)
        if ids is None:
            text = f'{self.tokenizer.bos_token}{self.image_prefix} {prompt.strip()}'
            ids = self.tokenizer(text, add_special_tokens=False)['input_ids']
            ids[2:2 + self.num_image_tokens] = self.image_ids
            self._cache[prompt] = ids
            if len(self._cache) > PROMPT_CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(prompt)
        return list(ids)

    def clear(self) -> None:
        self._cache.clear()

    def image_mask(self, ids: list[int]) -> list[bool]:
        """Return a mask, True at the image placeholders of prompt ``ids``."""
        n = self.num_image_tokens
        return [False, False] + [True] * n + [False] * (len(ids) - n - 2)

    def score_positions(self, ids: list[int]) -> list[int]:
        """Return the positions of the location tokens of the prompt's own boxes (regions)."""
        return [p for box in locate_box_tokens(ids, self.location_ids) for p in box[:2]]

    def check_control_tokens(self, prompt: str, ids: list[int]) -> None:
        """Refuse a prompt whose text yields control tokens it does not spell in ASCII.

        The prompt builder neutralises user text by the tokenizer's reading of each character;
        this checks the outcome on the ids: after the image block, no special or image token,
        and exactly one tag or patch-index token per tag spelled in the prompt.
        """
        text_ids = ids[self.num_image_tokens + 3:]
        special = sorted({i for i in text_ids if i in self._special_ids})
        tags = sum(1 for i in text_ids if i >= self._first_added_id)
        if special or tags != len(TAG_RE.findall(prompt)):
            found = self.tokenizer.convert_ids_to_tokens(
                special or [i for i in text_ids if i >= self._first_added_id])
            raise PromptError(f'prompt text yields control tokens it does not spell '
                              f'({", ".join(found)}); refused')

    def result(self, prompt_ids: list[int], query: Query, size: tuple[int, int],
               row: DecodedRow, timings: Timings) -> GroundingResult:
        """Post-process one generated row as the reference does; score and order its boxes."""
        full = prompt_ids + row.tokens
        decoded = self.tokenizer.decode(full, skip_special_tokens=True)
        caption = caption_part(decoded)
        text, parsed = parse_grounded_text(caption)
        n_prompt = len(prompt_ids)

        def prob(position: int) -> float:
            if position >= n_prompt:
                return row.token_probs[position - n_prompt]
            return row.prompt_probs.get(position, float('nan'))

        start = max((i + 1 for i, t in enumerate(full) if t == self.eoi_id), default=0)
        located = self._locate_boxes(full, start)
        width, height = size
        phrases, cursor = [], 0
        for phrase in parsed:
            boxes = []
            for cells, normalized in zip(phrase.cells, phrase.normalized_boxes()):
                score, given = 0.0, False
                # The tokens that named this box: the next located box with its cells, in
                # order, so that a box never takes the score of a later one.
                for k in range(cursor, len(located)):
                    pa, pb, ca, cb = located[k]
                    if (ca, cb) == cells:
                        cursor, given = k + 1, pb < n_prompt
                        p1, p2 = prob(pa), prob(pb)
                        if math.isfinite(p1) and math.isfinite(p2):
                            score = math.sqrt(max(p1, 0.0) * max(p2, 0.0))
                        break
                ordered = patch_indices_to_normalized(*ordered_cells(*cells))
                boxes.append(GroundedBox(normalized_to_pixels(ordered, width, height),
                                         normalized, cells, score, given))
            phrases.append(GroundedPhrase(phrase.text, phrase.start, phrase.end, tuple(boxes)))
        answer = ' '.join(strip_tags(self.tokenizer.decode(
            row.tokens, skip_special_tokens=True)).split())
        return GroundingResult(task=query.task, prompt=query.prompt, text=text,
                               phrases=tuple(phrases), image_size=(width, height),
                               raw_text=caption, num_generated_tokens=len(row.tokens),
                               timings=timings, answer=answer)

    def _locate_boxes(self, ids: list[int], start: int) -> list[tuple[int, int, int, int]]:
        """Boxes named by location tokens from ``start`` on, as the decoded text shows them.

        The text is decoded without special tokens (``<unk>``, ``<s>``, ``<pad>``, ...), so a
        box whose tokens a special token interrupts still stands in it; they are skipped here
        too, and the positions found are those of the tokens in ``ids``.
        """
        kept = [i for i in range(start, len(ids)) if ids[i] not in self._skipped_ids]
        return [(kept[a], kept[b], ca, cb) for a, b, ca, cb in
                locate_box_tokens([ids[i] for i in kept], self.location_ids)]
