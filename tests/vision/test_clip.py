"""CLIP zero-shot with a tiny CLIP built from a config: invariance, caching, λ, offline failure."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from equirl.errors import OfflineError
from equirl.symmetrizers import equivariance_errors
from equirl.vision import fit_lambda, symmetrize_classifier, vision_action
from equirl.vision.clip import CLIPZeroShot, clip_preprocess, load_clip, text_classifier

ATOL = 1e-5


def _tiny_clip() -> torch.nn.Module:
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        text_config={
            "vocab_size": 40,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 12,
            "eos_token_id": 2,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 4,
        },
        projection_dim=8,
    )
    torch.manual_seed(0)
    return CLIPModel(cfg).eval()


def _tiny_tokenizer():  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[EOS]", "a", "photo", "of", "the", "cat", "dog", "bird", "drawing", "."]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    )


@pytest.fixture(scope="module")
def clip() -> torch.nn.Module:
    return _tiny_clip()


def _ids() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 40, (3, 2, 6), generator=g)
    ids[..., -1] = 2  # end of text
    return ids


@pytest.mark.parametrize("group", ["rot90", "mirror", "rot90+mirror"])
@pytest.mark.parametrize(
    "method,kw",
    [
        ("equitune", {}),
        ("equizero", {"proxy": "max_prob"}),
        ("equizero", {"proxy": "entropy"}),
        ("lambda", {}),
    ],
    ids=str,
)
def test_clip_invariance(clip: torch.nn.Module, group: str, method: str, kw: dict) -> None:
    zs = CLIPZeroShot.from_input_ids(clip, _ids())
    model = symmetrize_classifier(zs, group=group, method=method, **kw).eval()
    x = torch.randn(3, 3, 16, 16)
    y = model(x)
    assert y.shape == (3, 3)
    if method == "lambda":
        with torch.no_grad():
            for p in model.lambda_net.parameters():
                p.normal_(0, 0.5)
    errs = equivariance_errors(model, vision_action(group), None, x)
    assert max(errs.values()) < ATOL, errs
    assert max(equivariance_errors(zs, vision_action(group), None, x).values()) > 1e-4  # plain CLIP is not


def test_text_classifier_prompt_ensemble_and_cache(clip: torch.nn.Module) -> None:
    tok = _tiny_tokenizer()
    templates = ("a photo of a {} .", "a drawing of the {} .")
    emb = text_classifier(clip, tok, ["cat", "dog", "bird"], templates)
    assert emb.shape == (3, 8)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    # the ensemble: mean of normalised per-template embeddings, renormalised
    with torch.no_grad():
        enc = tok([t.format("dog") for t in templates], padding=True, return_tensors="pt")
        out = clip.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        e = out if isinstance(out, torch.Tensor) else out.pooler_output
        ref = torch.nn.functional.normalize(torch.nn.functional.normalize(e, dim=-1).mean(0), dim=0)
    assert torch.allclose(emb[1], ref, atol=1e-5)
    # cached: the same tensor object, no recomputation
    assert text_classifier(clip, tok, ["cat", "dog", "bird"], templates) is emb
    zs = CLIPZeroShot.from_classnames(clip, tok, ["cat", "dog", "bird"], templates)
    assert torch.equal(zs.class_embeddings, emb)


def _reordered_tokenizer():  # type: ignore[no-untyped-def]
    """Like :func:`_tiny_tokenizer` (also nameless: ``name_or_path == ''``) with the class words' ids swapped."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[EOS]", "a", "photo", "of", "the", "bird", "cat", "dog", "drawing", "."]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    )


def _fresh(clip: torch.nn.Module, tok, names, templates) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The class embeddings computed without any cache."""
    from equirl.vision import clip as clip_module

    clip_module._CACHE.pop(clip, None)
    return text_classifier(clip, tok, names, templates)


def test_text_classifier_cache_tells_nameless_tokenizers_apart(clip: torch.nn.Module) -> None:
    templates, names = ("a photo of a {} .",), ["cat", "dog", "bird"]
    tok_a, tok_b = _tiny_tokenizer(), _reordered_tokenizer()
    assert tok_a.name_or_path == tok_b.name_or_path == ""
    want_b = _fresh(clip, tok_b, names, templates)
    emb_a = _fresh(clip, tok_a, names, templates)
    emb_b = text_classifier(clip, tok_b, names, templates)  # a's entry is cached: b must not get it
    assert not torch.allclose(emb_a, emb_b)
    assert torch.allclose(emb_b, want_b, atol=1e-6)


def test_text_classifier_cache_follows_in_place_weight_changes() -> None:
    clip, tok = _tiny_clip(), _tiny_tokenizer()
    templates, names = ("a photo of a {} .",), ["cat", "dog"]
    emb = text_classifier(clip, tok, names, templates)
    ids = tok([t.format(c) for c in names for t in templates], padding=True, return_tensors="pt")
    emb_ids = text_classifier(clip, input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
    with torch.no_grad():
        clip.text_projection.weight.mul_(-1)  # in place: same tensor objects, new values
    flipped = text_classifier(clip, tok, names, templates)
    assert torch.allclose(flipped, -emb, atol=1e-6)
    flipped_ids = text_classifier(clip, input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
    assert torch.allclose(flipped_ids, -emb_ids, atol=1e-6)
    other = _tiny_clip()
    with torch.no_grad():
        other.text_projection.weight.normal_()
    clip.load_state_dict(other.state_dict())  # copied in: also a change
    assert torch.allclose(text_classifier(clip, tok, names, templates), _fresh(other, tok, names, templates))
    again = text_classifier(clip, tok, names, templates)
    assert text_classifier(clip, tok, names, templates) is again  # unchanged weights: still cached


def test_clip_lambda_on_frozen_image_features(clip: torch.nn.Module) -> None:
    zs = CLIPZeroShot.from_input_ids(clip, _ids())
    model = symmetrize_classifier(zs, group="rot90", method="lambda")
    assert model.lambda_features == zs.features
    x = torch.randn(12, 3, 16, 16)
    labels = torch.randint(0, 3, (12,))
    before = [p.clone() for p in clip.parameters()]
    losses = fit_lambda(model, x, labels, steps=15, lr=1e-2)
    assert sum(losses[-3:]) < sum(losses[:3])
    assert all(torch.equal(a, b) for a, b in zip(before, clip.parameters()))
    assert max(equivariance_errors(model.eval(), vision_action("rot90"), None, x[:4]).values()) < ATOL


def test_clip_preprocess_is_square_and_commutes_with_rotation() -> None:
    x = torch.rand(2, 3, 20, 30)
    y = clip_preprocess(x, size=16)
    assert y.shape == (2, 3, 16, 16)
    sq = torch.rand(2, 1, 16, 16)
    r = vision_action("rot90")
    g = r.group.elements[1]
    assert torch.allclose(clip_preprocess(r.apply(sq, g), 16), r.apply(clip_preprocess(sq, 16), g), atol=1e-5)


def test_load_clip_offline_fails_fast_with_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(
        OfflineError, match="cannot load CLIP 'openai/clip-vit-base-patch32'.*offline"
    ) as info:
        load_clip("openai/clip-vit-base-patch32", cache_dir="/nonexistent-equirl-cache")
    assert time.perf_counter() - t < 20
    assert "\n" not in str(info.value)


def test_cli_clip_offline_is_one_line_error(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from equirl.cli import main

    root = Path(str(tmp_path))
    for c in ("cat", "dog"):
        (root / c).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / c / "0.png")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["vision", "clip", str(root), "--model", "openai/clip-vit-base-patch32"])
    assert rc == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot load CLIP" in err and "offline" in err
    assert main(["vision", "clip", str(root), "--methods", "lambda"]) == 2


def test_clip_zero_shot_preprocesses_at_the_model_image_size(tmp_path: Path) -> None:
    """The tiny CLIP takes 16x16 images, not CLIP's usual 224: the folder is resized to 16."""
    from PIL import Image

    from equirl.vision.clip import clip_image_size, clip_zero_shot

    clip, tok = _tiny_clip(), _tiny_tokenizer()
    assert clip_image_size(clip) == 16
    clip.save_pretrained(tmp_path / "clip")
    tok.save_pretrained(tmp_path / "clip")
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (20, 24), (60 * k, 100, 200)).save(tmp_path / "imgs" / cls / f"{k}.png")
    n, rows = clip_zero_shot(tmp_path / "imgs", str(tmp_path / "clip"), methods=["base", "equitune"])
    assert n == 4 and set(rows) == {"base", "equitune"}
