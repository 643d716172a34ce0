# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Prompt templates of the tasks, control-token neutralisation and region binding.

Neutralisation is decided by how the tokenizer reads each character of user text (its
normaliser folds look-alikes: fullwidth ``＜`` and small-form ``﹤`` read as ``<``, and the
tokenizer matches ``<s>``, ``</s>``, ``<pad>``, ``<unk>`` and ``<mask>`` after that fold). The
engine passes the tokenizer's reading (:class:`CharReader`); without a model, NFKC, which that
normaliser follows, stands in for it. Rule, for the user text of FIND and QUESTION queries and
the continuous prompt:

- every character read as or holding ``<`` becomes ``‹`` (U+2039), and as ``>`` becomes ``›``
  (U+203A), so no user text can form ``<grounding>``, ``<phrase>``, ``<patch_index_NNNN>``,
  ``<s>`` or any other tag or special token, and the post-processing never strips user text;
- every character the tokenizer cannot represent (it would become ``<unk>``) becomes a space,
  so user text yields no special token at all;
- control characters (NUL, escape, ...) become spaces; tabs and newlines are kept;
- text that is not valid Unicode (lone surrogates, e.g. from undecodable bytes) is refused.

Only RAW queries pass control tokens through, by definition: the grounding tags and patch
indices. The tokens that delimit the image and the sequence (``<image>``, ``</image>``, ``<s>``,
``</s>``, ``<pad>``, ``<unk>``, ``<mask>``) are placed by the node alone; a RAW prompt that
spells one, in any characters the tokenizer reads as it, is refused. The engine checks the
result on the token ids as well (:func:`kosmos_ros.model.engine.GroundingEngine.prepare`).

Square brackets in a QUESTION mark the phrases that regions bind to: ``What is [this object]?``
with one region becomes ``What is<phrase> this object</phrase><object>...</object>?``.
"""

from __future__ import annotations

import math
import re
from typing import Callable
import unicodedata

from kosmos_ros.datatypes import PixelBox, Query, Task
from kosmos_ros.errors import PromptError, RegionError
from kosmos_ros.model.boxes import normalized_to_patch_indices, patch_token, pixels_to_normalized

# The tag tokens KOSMOS-2's processor adds to the vocabulary (besides 1,024 patch indices).
TAG_TOKENS = (
    '</doc>', '<image>', '</image>', '</chunk>', '</line>', '<phrase>', '</phrase>',
    '<object>', '</object>', '</delimiter_of_multi_objects/>', '<grounding>',
)
TEMPLATES = {
    Task.CAPTION: '<grounding>An image of',
    Task.DETAILED_CAPTION: '<grounding>Describe this image in detail:',
    Task.FIND: '<grounding><phrase> {text}</phrase>',
    Task.QUESTION: '<grounding> Question: {text} Answer:',
}
_PHRASE_RE = re.compile(r'<phrase>.+?</phrase>')
# Every tag and patch-index token, as spelled in a prompt.
TAG_RE = re.compile('|'.join(re.escape(t) for t in TAG_TOKENS) + r'|<patch_index_\d{4}>')
_BRACKET_RE = re.compile(r'\s*\[([^\[\]]*)\]')
_NEUTRAL = str.maketrans({'<': '\u2039', '>': '\u203a'})
# Tokens of the sequence structure (image block, sequence and special tokens): never user text.
STRUCTURE_TOKENS = ('<image>', '</image>', '<s>', '</s>', '<pad>', '<unk>', '<mask>')


class CharReader:
    """How the tokenizer reads single characters: its normal form, or None if unknown.

    Without a tokenizer, NFKC stands in for the normaliser and every character is known.
    Readings are cached per character.
    """

    def __init__(self, fold: Callable[[str], str] | None = None,
                 known: Callable[[str], bool] | None = None):
        self._fold = fold or (lambda c: unicodedata.normalize('NFKC', c))
        self._known = known or (lambda c: True)
        self._cache: dict[str, str | None] = {}

    def __call__(self, char: str) -> str | None:
        reading = self._cache.get(char, '\0')
        if reading == '\0':
            reading = self._fold(char) if self._known(char) else None
            if len(self._cache) < 65536:
                self._cache[char] = reading
        return reading

    def read(self, text: str) -> str:
        """Return ``text`` as the tokenizer matches special tokens in it (unknown: space)."""
        return ''.join(' ' if (r := self(c)) is None else r for c in text)


NFKC_READER = CharReader()


def _neutral_char(char: str, reader: CharReader) -> str:
    if char in '\t\n':
        return char
    reading = reader(char)
    if reading is None or unicodedata.category(char) == 'Cc':
        return ' '
    if '<' in reading:
        return '\u2039'
    if '>' in reading:
        return '\u203a'
    return char


def neutralize(text: str, reader: CharReader = NFKC_READER) -> str:
    """Apply the neutralisation rule of this module to user text."""
    try:
        text.encode('utf-8')
    except UnicodeEncodeError as exc:
        raise PromptError(f'prompt is not valid Unicode text (character {exc.start} is a lone '
                          'surrogate); send UTF-8') from None
    if text.isascii() and '<' not in text and '>' not in text and text.isprintable():
        return text  # the common case: nothing to read
    return ''.join(_neutral_char(c, reader) for c in text)


def _object_tokens(region: PixelBox, width: int, height: int) -> str:
    normalized = pixels_to_normalized(region, width, height)
    top_left, bottom_right = normalized_to_patch_indices(normalized)
    # Same spelling as the reference processor; the tokens strip the spaces on their left.
    return f'<object> {patch_token(top_left)} {patch_token(bottom_right)} </object>'


def validate_region(region: PixelBox, width: int, height: int, index: int = 0) -> None:
    """Raise RegionError unless ``region`` is a finite, non-empty box inside the frame."""
    coords = (region.x1, region.y1, region.x2, region.y2)
    if not all(isinstance(c, (int, float)) and math.isfinite(c) for c in coords):
        raise RegionError(f'region {index} has a coordinate that is not a finite number: '
                          f'{coords}')
    if not (region.x2 > region.x1 and region.y2 > region.y1):
        raise RegionError(f'region {index} is degenerate: width {region.width:g} and height '
                          f'{region.height:g} pixels must both be positive')
    if region.x1 < 0 or region.y1 < 0 or region.x2 > width or region.y2 > height:
        raise RegionError(
            f'region {index} (x1={region.x1:g}, y1={region.y1:g}, x2={region.x2:g}, '
            f'y2={region.y2:g}) lies outside the {width}x{height} image')
    # The box must still have x2 > x1 and y2 > y1 once normalized to the model's grid.
    nx1, ny1, nx2, ny2 = pixels_to_normalized(region, width, height)
    if not (nx2 > nx1 and ny2 > ny1):
        raise RegionError(f'region {index} is too small to represent relative to the image')


def _bind_regions(text: str, spans: list[tuple[int, int]], regions: tuple[PixelBox, ...],
                  width: int, height: int, what: str) -> str:
    if len(regions) > len(spans):
        raise RegionError(f'{len(regions)} regions given but the prompt has {len(spans)} '
                          f'{what}; each region binds to one {what[:-1]}, in order')
    for i, region in enumerate(regions):
        validate_region(region, width, height, i)
    out, pos = [], 0
    for (start, end), region in zip(spans, regions):
        out.append(text[pos:end])
        out.append(_object_tokens(region, width, height))
        pos = end
    out.append(text[pos:])
    return ''.join(out)


def _question_text(question: str) -> tuple[str, list[tuple[int, int]]]:
    """Mark [bracketed] phrases as <phrase> spans; return the text and the spans' bounds."""
    out, spans, pos = [], [], 0
    for match in _BRACKET_RE.finditer(question):
        inner = match.group(1).strip()
        if not inner:
            raise PromptError(f'empty [] phrase at character {match.start(1) - 1} of the '
                              'question; put the words the region refers to in the brackets')
        out.append(question[pos:match.start()])
        start = sum(len(s) for s in out)
        out.append(f'<phrase> {inner}</phrase>')
        spans.append((start, start + len(out[-1])))
        pos = match.end()
    rest = question[pos:]
    out.append(rest)
    text = ''.join(out)
    leftover = _BRACKET_RE.sub('', question)
    if '[' in leftover or ']' in leftover:
        raise PromptError('unbalanced or nested square brackets in the question; brackets '
                          'mark the phrases regions refer to, as in "What is [this]?"')
    return text, spans


def _readable(text: str, reader: CharReader, task: Task) -> str:
    """Neutralise user text and fold its white space; refuse it if nothing is left."""
    text = ' '.join(neutralize(text, reader).split())
    if not text:
        raise PromptError(f'empty prompt: no character of the {task.name.lower()} prompt can '
                          'be read by the model (all are outside its vocabulary)')
    return text


def build_prompt(query: Query, width: int, height: int,
                 reader: CharReader = NFKC_READER) -> str:
    """Return the model prompt of ``query`` (without image tokens) for a width x height frame.

    ``reader`` says how the tokenizer reads characters (see :class:`CharReader`).

    Raises:
        PromptError: empty, malformed or not valid text.
        RegionError: a region is invalid or has no phrase to bind to.
    """
    task = query.task
    regions = tuple(query.regions)
    if task in (Task.CAPTION, Task.DETAILED_CAPTION):
        if regions:
            raise RegionError(f'{task.name.lower()} takes no regions; use QUESTION or RAW '
                              'to ask about a region')
        return TEMPLATES[task]
    if not isinstance(query.prompt, str):
        raise PromptError(f'prompt must be a string, not {type(query.prompt).__name__}')
    if not query.prompt.strip():
        what = {Task.FIND: 'the phrase to find', Task.QUESTION: 'the question',
                Task.RAW: 'the prompt'}[task]
        raise PromptError(f'empty prompt: {task.name.lower()} needs {what}')
    if task is Task.FIND:
        if regions:
            raise RegionError('find takes no regions; it returns the boxes of the phrase')
        return TEMPLATES[task].format(text=_readable(query.prompt, reader, task))
    if task is Task.QUESTION:
        question = _readable(query.prompt, reader, task)
        text, spans = _question_text(question)
        prefix = TEMPLATES[task].split('{text}')[0]
        shifted = [(s + len(prefix), e + len(prefix)) for s, e in spans]
        prompt = TEMPLATES[task].format(text=text)
        return _bind_regions(prompt, shifted, regions, width, height, 'bracketed phrases')
    # RAW: expert prompt, control tokens allowed; still valid text.
    try:
        query.prompt.encode('utf-8')
    except UnicodeEncodeError:
        raise PromptError('prompt is not valid Unicode text; send UTF-8') from None
    prompt = ''.join(' ' if reader(c) is None else c for c in query.prompt)
    read = reader.read(prompt)
    for token in STRUCTURE_TOKENS:
        if token in read:
            spelled = '' if token in prompt else ' (spelled with look-alike characters)'
            raise PromptError(f'raw prompt holds {token!r}{spelled}, which is placed by the '
                              'node (the image block and sequence tokens are not part of a '
                              'prompt)')
    spans = [m.span() for m in _PHRASE_RE.finditer(prompt)]
    return _bind_regions(prompt, spans, regions, width, height, '<phrase> spans')
