"""The GPU and model catalogs: complete, sourced, self-consistent."""

from __future__ import annotations

import re

import pytest

from sim.errors import ConfigError
from sim.spec import catalog

URL = re.compile(r"https?://\S+")

GPU_FIELDS = ("hbm_bandwidth_gbps", "memory_gb", "peak_tflops", "interconnect_gbps")
MODEL_SHAPES = ("layers", "hidden", "heads", "kv_heads", "head_dim", "intermediate", "vocab")
MODEL_NUMERIC = (*MODEL_SHAPES, "params")
REQUIRED_GPUS = (
    "h100-sxm",
    "h100-pcie",
    "h200",
    "a100-80gb",
    "a100-40gb",
    "l40s",
    "l4",
    "a10g",
    "mi300x",
)
REQUIRED_MODELS = (
    "article-8l",
    "llama-3-8b",
    "llama-3-70b",
    "llama-2-7b",
    "llama-2-70b",
    "mistral-7b",
    "qwen2.5-7b",
)


def _shape_args(m: dict) -> dict:
    return {k: m[k] for k in (*MODEL_SHAPES, "tied_embeddings", "qkv_bias")}


# --- presence -------------------------------------------------------------------------------


def test_required_entries_present():
    assert set(REQUIRED_GPUS) <= set(catalog.gpu_names())
    assert set(REQUIRED_MODELS) <= set(catalog.model_names())


def test_names_in_natural_order():
    names = catalog.gpu_names()
    assert names.index("a10g") < names.index("a100-40gb") < names.index("a100-80gb")
    assert names.index("l4") < names.index("l40s")
    assert len(set(names)) == len(names)
    assert catalog.model_names()[0] == "article-8l"


# --- GPUs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", catalog.gpu_names())
def test_gpu_has_positive_numeric_fields(name):
    g = catalog.gpu(name)
    # fp8_tflops and memory_exposed_gib where a figure was read
    assert set(GPU_FIELDS) <= set(g) <= {*GPU_FIELDS, "fp8_tflops", "memory_exposed_gib"}
    for field in g:
        value = g[field]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (name, field)
        assert value > 0, (name, field)


@pytest.mark.parametrize("name", catalog.gpu_names())
def test_gpu_every_figure_has_a_source_url(name):
    entry = catalog.gpu_entry(name)
    assert entry["display_name"]
    assert entry["interconnect"]
    for field in GPU_FIELDS:
        assert URL.search(str(entry["sources"].get(field, ""))), (name, field)
    if "memory_exposed_gib" in entry:
        assert URL.search(str(entry["sources"].get("memory_exposed_gib", ""))), name
        assert 0.97 < entry["memory_exposed_gib"] / entry["memory_gb"] < 1.0, name  # GiB, less the driver's share


def test_exposed_fraction_is_the_median_of_the_read_cards():
    # H100 79.19/80 = 0.98988, A100 79.25/80 = 0.99063, A100-40GB 39.38/40 = 0.9845: median 0.98988
    assert catalog.exposed_fraction() == pytest.approx(79.19 / 80)


def test_gpu_datasheet_figures():
    # As on the datasheets (see sources in gpus.yaml).
    assert catalog.gpu("h100-sxm")["hbm_bandwidth_gbps"] == 3350
    assert catalog.gpu("h200")["hbm_bandwidth_gbps"] == 4800
    assert catalog.gpu("a100-80gb")["hbm_bandwidth_gbps"] == 2039
    assert catalog.gpu("h100-sxm")["peak_tflops"] == 989  # 1,979 with sparsity / 2
    assert catalog.gpu("h100-sxm")["interconnect_gbps"] == 450  # 900 bidirectional / 2
    assert catalog.gpu("h200")["memory_gb"] == 141
    assert catalog.gpu("mi300x")["memory_gb"] == 192
    assert (catalog.gpu("b200")["hbm_bandwidth_gbps"], catalog.gpu("b200")["memory_gb"]) == (8000, 179)
    assert (catalog.gpu("b200")["fp8_tflops"], catalog.gpu("gb200")["fp8_tflops"]) == (4500, 5000)
    assert catalog.gpu("gb200")["memory_gb"] == 186  # 13.4 TB over 72 GPUs
    assert catalog.gpu("b200")["interconnect_gbps"] == 900  # NVLink 5, 1,800 bidirectional / 2


def test_gpu_dense_tflops_are_half_the_sparse_headline():
    # Datasheets' "with sparsity" headline numbers; the catalog stores dense, about half.
    # (The L40S datasheet prints 362.05 dense next to 733 sparse, hence the tolerance.)
    sparse = {
        "h100-sxm": 1979,
        "h100-pcie": 1513,
        "h200": 1979,
        "a100-80gb": 624,
        "a100-40gb": 624,
        "l40s": 733,
        "l4": 242,
        "mi300x": 2614.9,
        "b200": 4500,
        "gb200": 5000,
    }
    for name, s in sparse.items():
        assert catalog.gpu(name)["peak_tflops"] == pytest.approx(s / 2, rel=0.015), name


# --- models ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", catalog.model_names())
def test_model_has_positive_numeric_fields(name):
    m = catalog.model(name)
    assert set(m) == {*MODEL_NUMERIC, "tied_embeddings", "qkv_bias"}
    for field in MODEL_NUMERIC:
        assert isinstance(m[field], int) and not isinstance(m[field], bool), (name, field)
        assert m[field] > 0, (name, field)
    assert isinstance(m["tied_embeddings"], bool)
    assert isinstance(m["qkv_bias"], bool)


@pytest.mark.parametrize("name", catalog.model_names())
def test_model_shapes_and_params_have_source_urls(name):
    entry = catalog.model_entry(name)
    assert entry["display_name"]
    for field in ("shapes", "params"):
        assert URL.search(str(entry["sources"].get(field, ""))), (name, field)


@pytest.mark.parametrize("name", catalog.model_names())
def test_model_head_geometry(name):
    m = catalog.model(name)
    assert m["heads"] % m["kv_heads"] == 0
    if name == "qwen3-32b":  # its config.json sets head_dim 128 for 64 heads on a 5,120 width
        assert (m["heads"] * m["head_dim"], m["hidden"]) == (8192, 5120)
    else:
        assert m["hidden"] == m["heads"] * m["head_dim"]


@pytest.mark.parametrize("name", catalog.model_names())
def test_param_count_matches_catalog_params(name):
    m = catalog.model(name)
    assert catalog.param_count(**_shape_args(m)) == pytest.approx(m["params"], rel=0.005)


def test_param_count_hand_checked_values():
    assert catalog.param_count(**_shape_args(catalog.model("llama-3-8b"))) == 8_030_261_248
    assert catalog.param_count(**_shape_args(catalog.model("llama-2-7b"))) == 6_738_415_616
    assert catalog.param_count(**_shape_args(catalog.model("mistral-7b"))) == 7_241_732_096
    assert catalog.model("llama-3-8b")["params"] == 8_030_261_248
    assert catalog.model("llama-2-7b")["params"] == 6_738_415_616
    assert catalog.model("mistral-7b")["params"] == 7_241_732_096
    # Qwen3-32B by hand: embeddings 2 x 151,936 x 5,120 = 1,555,824,640; per layer q and o
    # 2 x 5,120 x 8,192, k and v 2 x 5,120 x 1,024, MLP 3 x 5,120 x 25,600, two norms 2 x 5,120:
    # 487,598,080, times 64 layers; plus the final norm's 5,120
    assert catalog.model("qwen3-32b")["params"] == 1_555_824_640 + 64 * 487_598_080 + 5_120 == 32_762_106_880


def test_article_model_params_by_hand():
    m = catalog.model("article-8l")
    assert (m["layers"], m["hidden"], m["heads"], m["kv_heads"], m["head_dim"]) == (8, 4096, 32, 32, 128)
    assert (m["intermediate"], m["vocab"], m["tied_embeddings"]) == (11008, 32000, False)
    # per layer: q,o 2*4096*4096 = 33,554,432; k,v 2*4096*4096 = 33,554,432;
    # MLP 3*4096*11008 = 135,266,304; norms 2*4096 = 8,192 -> 202,383,360
    per_layer = 33_554_432 + 33_554_432 + 135_266_304 + 8_192
    assert per_layer == 202_383_360
    # 8 layers = 1,619,066,880; embeddings + lm_head 2*32000*4096 = 262,144,000; final norm 4096
    expected = 8 * per_layer + 262_144_000 + 4_096
    assert expected == 1_881_214_976
    assert m["params"] == expected
    assert catalog.param_count(**_shape_args(m)) == expected


def test_param_count_tied_and_bias_terms():
    base = dict(layers=1, hidden=8, heads=2, kv_heads=1, head_dim=4, intermediate=16, vocab=10)
    # per layer: 2*8*2*4 + 2*8*1*4 + 3*8*16 + 2*8 = 128 + 64 + 384 + 16 = 592
    assert catalog.param_count(**base, tied_embeddings=True) == 592 + 80 + 8
    assert catalog.param_count(**base, tied_embeddings=False) == 592 + 160 + 8
    # q/k/v bias: 2*4 + 2*1*4 = 16 more per layer
    assert catalog.param_count(**base, tied_embeddings=True, qkv_bias=True) == 592 + 16 + 88


def test_qwen_has_qkv_bias_and_card_size():
    m = catalog.model("qwen2.5-7b")
    assert m["qkv_bias"] is True
    assert m["params"] == 7_615_616_512  # model card: 7.61B total
    non_embedding = m["params"] - 2 * m["vocab"] * m["hidden"]
    assert round(non_embedding / 1e9, 2) == 6.53  # model card: 6.53B non-embedding


# --- access behaviour -----------------------------------------------------------------------


def test_names_are_case_insensitive():
    assert catalog.gpu("H100-SXM") == catalog.gpu("h100-sxm")
    assert catalog.model("Llama-3-8B") == catalog.model("llama-3-8b")
    assert catalog.gpu_entry(" MI300X ")["display_name"].startswith("AMD")


def test_numeric_views_exclude_text_fields():
    for field in ("sources", "note", "display_name", "interconnect"):
        assert field not in catalog.gpu("h100-sxm")
    for field in ("sources", "note", "display_name", "params_basis"):
        assert field not in catalog.model("qwen2.5-7b")
    assert "sources" in catalog.gpu_entry("h100-sxm")
    assert "sources" in catalog.model_entry("llama-3-8b")


def test_returned_dicts_are_copies():
    catalog.gpu("h100-sxm")["hbm_bandwidth_gbps"] = 1
    catalog.gpu_entry("h100-sxm")["sources"]["memory_gb"] = "x"
    catalog.model_entry("llama-3-8b")["sources"]["shapes"] = "x"
    assert catalog.gpu("h100-sxm")["hbm_bandwidth_gbps"] == 3350
    assert catalog.gpu_entry("h100-sxm")["sources"]["memory_gb"].startswith("http")
    assert catalog.model_entry("llama-3-8b")["sources"]["shapes"].startswith("http")


def test_unknown_gpu_suggests_and_lists_known():
    with pytest.raises(ConfigError) as exc:
        catalog.gpu("h100")
    msg = str(exc.value)
    assert msg.startswith("llm.gpu: unknown GPU 'h100' (did you mean 'h100-sxm'? known: a10g, a100-40gb, ")
    assert "\n" not in msg
    assert all(name in msg for name in REQUIRED_GPUS)


def test_unknown_model_suggests_with_custom_key():
    with pytest.raises(ConfigError) as exc:
        catalog.model("llama3-8b", key="sweep.llm.model")
    msg = str(exc.value)
    assert msg.startswith("sweep.llm.model: unknown model 'llama3-8b' (did you mean 'llama-3-8b'? ")
    assert "known: article-8l, " in msg


def test_unknown_name_without_close_match_has_no_guess():
    with pytest.raises(ConfigError) as exc:
        catalog.gpu_entry("tpu-v5e")
    msg = str(exc.value)
    assert "did you mean" not in msg
    assert msg.startswith("llm.gpu: unknown GPU 'tpu-v5e' (known: a10g, ")
    with pytest.raises(ConfigError):
        catalog.model_entry("gpt-4")


def test_non_string_name_is_config_error():
    with pytest.raises(ConfigError, match=r"^llm\.gpu: "):
        catalog.gpu(None)  # type: ignore[arg-type]
