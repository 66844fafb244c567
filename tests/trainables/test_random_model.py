"""Random-weight models of published shapes: names, shapes against the published parameter counts,
the learnt tokenizer, seeded weights, where the tokenizer's text comes from, and one-line errors."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import XTREME_SAMPLE
from trainables.config import ModelConfig, TrialConfig
from trainables.random_model import ARCHITECTURES, corpus_texts, random_model_dir

#: Parameter counts of the published checkpoints (their model cards / safetensors index), not derived here.
PUBLISHED = {"llama-3.2-1b": 1_235_814_400, "llama-3.2-3b": 3_212_749_824, "llama-3.1-8b": 8_030_261_248}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _model(**random) -> ModelConfig:
    return ModelConfig(name="random:llama-test", random={"corpus": "synthetic", **random})


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_published_shapes_have_the_published_parameter_counts(arch):
    from transformers import LlamaConfig

    from trainables.memory_plan import parameter_count

    assert parameter_count(LlamaConfig(**ARCHITECTURES[arch])) == PUBLISHED[arch]


def test_unknown_architecture_is_one_line_naming_the_choices():
    with pytest.raises(ValueError) as err:
        ModelConfig(name="random:gpt-5")
    assert "unknown random architecture 'gpt-5'" in str(err.value)
    assert "random:llama-3.2-3b" in str(err.value)


def test_cli_rejects_an_unknown_architecture_in_one_line(capsys):
    from tuner import cli

    assert cli.main(["sweep", "smoke", "--set", "model.name=random:nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "random:llama-3.2-3b" in err, err


def test_corpus_defaults_to_the_sweeps_data_source():
    local = f"local:{XTREME_SAMPLE}"
    cfg = TrialConfig.model_validate({"model": {"name": "random:llama-test"}, "data": {"source": local}})
    assert cfg.model.random.corpus == local
    kept = TrialConfig.model_validate({"model": {"name": "random:llama-test", "random": {"corpus": "synthetic"}},
                                       "data": {"source": local}})
    assert kept.model.random.corpus == "synthetic"
    assert TrialConfig.model_validate({"data": {"source": local}}).model.random.corpus is None  # not random: untouched

    from tuner.spec import SweepSpec

    spec = SweepSpec.model_validate({"model": {"name": "random:llama-test"}, "data": {"source": local}})
    assert spec.model.random.corpus == local
    assert all(t.model.random.corpus == local for t in spec.trial_configs("/tmp/x", {}))


def test_bad_corpus_is_rejected_naming_the_field():
    with pytest.raises(ValueError, match="local:<dir>"):
        ModelConfig(name="random:llama-test", random={"corpus": "s3://bucket"})


def test_build_gives_the_architecture_a_learnt_tokenizer_and_loadable_weights(home):
    from transformers import AutoConfig

    from trainables.models import load_model, load_tokenizer, model_identity, prepare_model

    cfg = _model()
    path = prepare_model(cfg)
    assert path == str(random_model_dir(cfg)) and path.startswith(str(home))
    config = AutoConfig.from_pretrained(path)
    for key, value in ARCHITECTURES["llama-test"].items():
        assert getattr(config, key) == value, key
    tok = load_tokenizer(cfg)
    assert 300 < len(tok) <= config.vocab_size
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|begin_of_text|>", "<|end_of_text|>", "<|pad|>")
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
        tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    text = "The premise holds. नमस्ते दुनिया 北京 12345"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text  # byte-level: any text round-trips
    model = load_model(cfg, torch.device("cpu"), trainable=False)
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in load_model(cfg, torch.device("cpu"), trainable=False).parameters())
    logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), config.vocab_size) and torch.isfinite(logits).all()
    assert model_identity(cfg) == f"random:{random_model_dir(cfg).name}"


def test_parameter_count_formula_matches_the_built_model(home):
    from transformers import AutoConfig

    from trainables.memory_plan import parameter_count
    from trainables.models import load_model, prepare_model

    cfg = _model()
    model = load_model(cfg, torch.device("cpu"), trainable=False)
    assert sum(p.numel() for p in model.parameters()) == parameter_count(AutoConfig.from_pretrained(prepare_model(cfg)))


def test_weights_are_seeded_and_the_seed_is_part_of_the_identity(home, tmp_path, monkeypatch):
    from trainables.models import load_model

    a = load_model(_model(), torch.device("cpu"), trainable=False).state_dict()
    monkeypatch.setenv("LAMTUNE_HOME", str(tmp_path / "other"))  # a second node builds it again
    b = load_model(_model(), torch.device("cpu"), trainable=False).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert random_model_dir(_model(init_seed=1)) != random_model_dir(_model())
    c = load_model(_model(init_seed=1), torch.device("cpu"), trainable=False).state_dict()
    assert not torch.equal(a["model.layers.0.mlp.up_proj.weight"], c["model.layers.0.mlp.up_proj.weight"])


def test_identity_follows_the_corpus_only_for_a_learnt_tokenizer(home):
    from trainables.models import SHIPPED_TINY

    local = f"local:{XTREME_SAMPLE}"
    assert random_model_dir(_model()) != random_model_dir(_model(corpus=local))
    given = dict(tokenizer=str(SHIPPED_TINY))
    assert random_model_dir(_model(**given)) == random_model_dir(_model(corpus=local, **given))


def test_a_given_tokenizer_is_used_as_it_is(home):
    from trainables.models import SHIPPED_TINY, load_tokenizer

    cfg = _model(tokenizer=str(SHIPPED_TINY))
    tok = load_tokenizer(cfg)
    assert len(tok) == 2048 and tok.bos_token == "<s>"


def test_a_missing_tokenizer_is_one_line(home, tmp_path):
    from trainables.models import ModelUnavailable, prepare_model

    with pytest.raises(ModelUnavailable) as err:
        prepare_model(_model(tokenizer=str(tmp_path / "nowhere")))
    assert "model.random.tokenizer" in str(err.value) and len(str(err.value).splitlines()) == 1


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(home):
    from trainables.models import prepare_model

    with pytest.raises(ValueError, match="more than random:llama-test's vocabulary"):
        prepare_model(_big_tokenizer_model(home))


def _big_tokenizer_model(home) -> ModelConfig:
    """A config whose tokenizer folder holds more tokens than llama-test's 4,096."""
    from trainables.bpe import LLAMA3_SPLIT, train_bpe
    from trainables.random_model import SPECIALS

    texts = corpus_texts(f"local:{XTREME_SAMPLE}", 200)
    tok = train_bpe(texts, 6000, LLAMA3_SPLIT, SPECIALS)
    assert len(tok) > 4096
    folder = home.parent / "big-tokenizer"
    tok.save_pretrained(folder)
    return _model(tokenizer=str(folder))


def test_corpus_reads_the_real_files_of_every_task_and_language():
    texts = corpus_texts(f"local:{XTREME_SAMPLE}", 5)
    joined = "\n".join(texts)
    assert any("\u0900" <= ch <= "\u097f" for ch in joined)  # Hindi
    assert any("\u4e00" <= ch <= "\u9fff" for ch in joined)  # Chinese
    assert len(texts) > 5 * 10


def test_a_corpus_without_text_is_one_line(tmp_path):
    with pytest.raises(ValueError) as err:
        corpus_texts(f"local:{tmp_path}", 5)
    assert "model.random.corpus" in str(err.value) and len(str(err.value).splitlines()) == 1


def test_llama3_pre_tokenisation():
    from tokenizers import Regex, pre_tokenizers

    from trainables.bpe import LLAMA3_SPLIT

    split = pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated")
    pieces = [p for p, _ in split.pre_tokenize_str("I'll pay 12345 now!! ok")]
    assert pieces == ["I", "'ll", " pay", " ", "123", "45", " now", "!!", " ok"]


def test_seeded_weights_follow_llamas_initialisation_and_the_seed():
    """seeded_model: same seed, same weights; another seed, others; N(0, 0.02²) matrices, unit norms,
    a zero padding row, tied head, and the rotary tables transformers' own construction gives."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from trainables.random_model import seeded_model

    config = LlamaConfig(**{**ARCHITECTURES["llama-test"], "hidden_size": 128, "intermediate_size": 256},
                         pad_token_id=2)
    a, b, c = seeded_model(config, 0), seeded_model(config, 0), seeded_model(config, 1)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, c.model.layers[0].mlp.up_proj.weight)
    w = a.model.layers[1].self_attn.q_proj.weight.float()
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.02) < 1e-3
    assert torch.equal(a.model.layers[0].input_layernorm.weight, torch.ones(128, dtype=torch.bfloat16))
    assert a.model.embed_tokens.weight[2].abs().sum() == 0 and a.model.embed_tokens.weight[3].abs().sum() > 0
    assert a.lm_head.weight is a.model.embed_tokens.weight
    ref = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    for (name, x), (_, y) in zip(a.named_buffers(), ref.named_buffers()):
        assert torch.equal(x, y), name
