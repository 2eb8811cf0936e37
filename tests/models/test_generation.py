"""Incremental decoding with a key/value cache, and sampling (contdepth.models.generation)."""

from __future__ import annotations

import pytest
import torch

import contdepth as cd
from contdepth.models import KVCache, create, generate

TOKENS = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
MANIFESTATIONS = {
    "discrete": {},
    "lie_trotter": {"continuous": True, "scheme": "lie_trotter", "n_steps": 3},
    "rk4_2": {"continuous": True, "scheme": "rk4", "n_steps": 2},
    "strang": {"continuous": True, "scheme": "strang", "n_steps": 3},
}


def tiny(context: int = 12, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return create("gpt", width=16, heads=2, layers=3, context=context, **options).double().eval()


@pytest.mark.parametrize("name", MANIFESTATIONS)
def test_feeding_tokens_a_few_at_a_time_gives_the_full_pass_logits(name):
    model = tiny(**MANIFESTATIONS[name])
    with torch.no_grad():
        full = model(TOKENS)
    cache = KVCache(model)
    pieces = [model(TOKENS[:, :5], cache=cache)]
    pieces += [model(TOKENS[:, i:i + 1], cache=cache) for i in range(5, 9)]
    pieces.append(model(TOKENS[:, 9:], cache=cache))  # several new tokens after cached ones: the shifted mask
    assert len(cache) == 12 and cache.slots[0][0].shape[2] == 12
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-12)


def test_a_cache_under_another_manifestation_is_exact_too_and_its_grid_is_kept():
    model = tiny(continuous=True)
    with cd.nn.manifest(model, "rk4", 3), torch.no_grad():
        full = model(TOKENS)
        cache = KVCache(model)
        first = model(TOKENS[:, :7], cache=cache)
        rest = model(TOKENS[:, 7:], cache=cache)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="filled with rk4 x 3, but the model now integrates with lie_trotter x 3"):
        model(TOKENS[:, :1], cache=cache)


def test_the_plain_pass_is_unchanged_after_a_cached_one():
    model = tiny(continuous=True, scheme="rk4", n_steps=2)
    with torch.no_grad():
        before = model(TOKENS)
        model(TOKENS[:, :3], cache=KVCache(model))
        assert torch.equal(model(TOKENS), before)
    attentions = [m for m in model.layers.template.modules() if isinstance(m, cd.models.CausalSelfAttention)]
    assert attentions and all(a.kv_session is None and "kv_session" not in vars(a) for a in attentions)


def test_cache_refusals_are_one_line():
    model = tiny(continuous=True)
    cache = KVCache(model)
    with cd.nn.adaptive_depth(model, 1e-3, 1e-4):
        with pytest.raises(ValueError, match="cache: a key/value cache needs a fixed grid"):
            model(TOKENS, cache=cache)
        with pytest.raises(ValueError, match="fixed grid"):
            generate(model, b"ab", 2)
    with cd.nn.manifest(model, "backward_euler", 2), pytest.raises(ValueError, match="data-dependent"):
        model(TOKENS, cache=cache)
    model(TOKENS[:, :10], cache=cache)
    with pytest.raises(ValueError, match="tokens: 3 tokens after the 10 cached exceed the model's context of 12"):
        model(TOKENS[:1, :3].expand(2, 3), cache=cache)
    assert len(cache) == 10  # a refused pass leaves the cache as it was
    with pytest.raises(ValueError, match="a batch of 1 sequences, but the cache holds 2"):
        model(TOKENS[:1, :1], cache=cache)
    with pytest.raises(ValueError, match="made for another model"):
        tiny()(TOKENS, cache=cache)
    with pytest.raises(ValueError, match="model.eval"):
        model.train()(TOKENS, cache=KVCache(model))
    with pytest.raises(ValueError, match="model: a key/value cache is for a contdepth GPT"):
        KVCache(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="cache: expected a KVCache of this model, got bool"):
        model.eval()(TOKENS, cache=True)
    with pytest.raises(ValueError, match="tokens: a cached pass needs at least one new token"):
        model(TOKENS[:, :0], cache=cache)


@pytest.mark.parametrize("name", ["discrete", "rk4_2"])
def test_generate_is_deterministic_for_a_seed_and_the_same_with_and_without_the_cache(name):
    model = tiny(context=8, **MANIFESTATIONS[name])
    prompt = b"hello"
    for options in ({}, {"temperature": 0.0}, {"temperature": 0.7, "top_k": 5}):
        sample = generate(model, prompt, 20, seed=3, **options)  # 25 bytes: the window slides past the context
        assert len(sample) == 20 and isinstance(sample, bytes)
        assert generate(model, prompt, 20, seed=3, **options) == sample
        assert generate(model, prompt, 20, seed=3, cache=False, **options) == sample
    assert generate(model, prompt, 20, seed=4) != generate(model, prompt, 20, seed=3)
    assert generate(model, b"a much longer prompt than the context", 3, seed=0) == \
        generate(model, b"he context", 3, seed=0, cache=False)  # only the last 8 bytes count
    assert not model.training


def test_greedy_decoding_takes_the_most_likely_byte_and_top_k_one_is_greedy():
    model = tiny(context=8)
    greedy = generate(model, b"abc", 6, temperature=0)
    assert generate(model, b"abc", 6, temperature=2.0, top_k=1, seed=9) == greedy
    sequence = b"abc"
    with torch.no_grad():
        for _ in range(6):
            sequence += bytes([int(model(torch.tensor([list(sequence[-8:])]))[0, -1].argmax())])
    assert sequence[3:] == greedy
    model.train()
    generate(model, b"abc", 1)
    assert model.training  # the mode comes back


@pytest.mark.parametrize("arguments, message", [
    ({"prompt": b""}, "prompt: expected non-empty bytes, got bytes of length 0"),
    ({"prompt": "text"}, "prompt: expected non-empty bytes, got str"),
    ({"tokens": 0}, "tokens"),
    ({"tokens": 1_000_001}, "tokens"),
    ({"tokens": 2.0}, "tokens"),
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": float("inf")}, "temperature"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": 257}, "top_k"),
    ({"seed": -1}, "seed"),
    ({"seed": 2 ** 64}, "seed"),
    ({"seed": True}, "seed"),
    ({"cache": "yes"}, "cache"),
])
def test_bad_arguments_are_one_line(arguments, message):
    values = {"prompt": b"ab", "tokens": 2, **arguments}
    with pytest.raises(ValueError, match=message) as caught:
        generate(tiny(), values.pop("prompt"), values.pop("tokens"), **values)
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="model: generate samples from a contdepth GPT"):
        generate(torch.nn.Linear(2, 2), b"ab", 2)


def test_non_finite_logits_are_one_line():
    model = tiny()
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="logits are not finite"):
        generate(model, b"ab", 2)
