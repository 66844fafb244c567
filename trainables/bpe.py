"""Byte-level BPE tokenizers trained on the tasks' own rendered text (the tiny default's and the
random-weight models'), and the text they learn from."""

from __future__ import annotations

from typing import Any, Iterable

from trainables.tasks.schema import Record

#: Llama-3's pre-tokenisation pattern: letters, 1-3 digits, punctuation runs and whitespace are
#: split apart before BPE, so Devanagari words break at their vowel signs as Llama-3's do.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def rendered_texts(task: str, records: Iterable[Record]) -> list[str]:
    """Each record as the student sees it, its prompt followed by its gold answer, in plain text."""
    from trainables.prompts import _plain_text, build_messages
    from trainables.tasks import get_task

    spec = get_task(task)
    return [_plain_text(build_messages(task, r)) + " " + spec.answer(r) for r in records]


def train_bpe(texts: Iterable[str], vocab_size: int, split_regex: str, specials: tuple[str, str, str],
              padding_side: str = "right") -> Any:
    """A byte-level BPE of at most `vocab_size` tokens learnt from `texts`, BOS prepended to every encoding.

    `specials` are (bos, eos, pad) and take the first ids; `split_regex` cuts text into pre-tokens
    that merges never cross."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bos, eos, pad = specials
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split_regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[pad, bos, eos],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   padding_side=padding_side)
