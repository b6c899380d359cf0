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
MOE_FIELDS = ("experts", "experts_per_token", "shared_experts", "expert_intermediate", "dense_layers")
MLA_FIELDS = ("q_lora_rank", "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
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
    assert set(GPU_FIELDS) <= set(g) <= {*GPU_FIELDS, "fp8_tflops", "fp4_tflops", "memory_exposed_gib"}
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
    # DGX B200: 1,440 GB over 8 GPUs
    assert (catalog.gpu("b200")["hbm_bandwidth_gbps"], catalog.gpu("b200")["memory_gb"]) == (8000, 180)
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
    extra = set(m) - {*MODEL_NUMERIC, "tied_embeddings", "qkv_bias"}
    assert extra in (set(), set(MOE_FIELDS), {*MOE_FIELDS, *MLA_FIELDS}), (name, extra)
    for field in MODEL_NUMERIC:
        assert isinstance(m[field], int) and not isinstance(m[field], bool), (name, field)
        assert m[field] > 0, (name, field)
    for field in extra:
        assert isinstance(m[field], int) and not isinstance(m[field], bool) and m[field] >= 0, (name, field)
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
    # Qwen3, gpt-oss, DeepSeek, Kimi and MiniMax set head_dim apart from hidden / heads in config.json
    if not name.startswith(("qwen3", "gpt-oss", "deepseek", "kimi", "minimax")):
        assert m["hidden"] == m["heads"] * m["head_dim"]


@pytest.mark.parametrize("name", catalog.model_names())
def test_param_count_matches_catalog_params(name):
    m = catalog.model(name)
    if "experts" in m:  # MoE / MLA: the general count, exact (the catalog stores what it computes)
        extra = {k: m[k] for k in (*MOE_FIELDS, *MLA_FIELDS) if k in m}
        assert catalog.param_counts(**_shape_args(m), **extra)[0] == m["params"]
        return
    assert catalog.param_count(**_shape_args(m)) == pytest.approx(m["params"], rel=0.005)
    assert catalog.param_counts(**_shape_args(m)) == (catalog.param_count(**_shape_args(m)),) * 2


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


# --- Blackwell GPUs, pinned against the figures their sources print -------------------------


def test_b200_figures_from_the_dgx_b200_page_and_hgx_table():
    g = catalog.gpu("b200")
    # DGX B200 (8 GPUs): 1,440 GB, 64 TB/s, FP4 72 PFLOPS dense, FP8 72 PFLOPS with sparsity,
    # NVLink 14.4 TB/s aggregate; HGX B200 table: BF16 4,500 TFLOPS with sparsity
    assert g["memory_gb"] == 1440 / 8 == 180
    assert g["hbm_bandwidth_gbps"] == 64_000 / 8
    assert g["fp4_tflops"] == 72_000 / 8
    assert g["fp8_tflops"] == 72_000 / 8 / 2
    assert g["peak_tflops"] == 4500 / 2
    assert g["interconnect_gbps"] == 14_400 / 8 / 2


def test_gb200_figures_from_the_gb200_variant_table_and_nvl72_rack():
    g = catalog.gpu("gb200")
    # glennklockwood, GB200 variant at 1,200 W (sparse): BF16 5,000, FP8 10,000, FP4 20,000; 8 TB/s
    assert (g["peak_tflops"], g["fp8_tflops"], g["fp4_tflops"]) == (5000 / 2, 10_000 / 2, 20_000 / 2)
    assert g["hbm_bandwidth_gbps"] == 8000
    assert g["memory_gb"] == round(13_400 / 72)  # about 13.4 TB over 72 GPUs
    assert g["interconnect_gbps"] == 1800 / 2  # 1.8 TB/s per GPU, bidirectional


def test_b300_figures_from_the_hgx_b300_table():
    g = catalog.gpu("b300")
    # glennklockwood, HGX B300 (matrix dense / sparse): BF16 2,250 / 4,500, FP8 4,500 / 9,000,
    # FP4 13,125 dense (105 PFLOPS over 8 GPUs) / 18,000 sparse; 8 TB/s. verda: 270 GB.
    assert (g["peak_tflops"], g["fp8_tflops"]) == (4500 / 2, 9000 / 2)
    assert g["fp4_tflops"] == 105_000 / 8 == 13_125
    assert (g["hbm_bandwidth_gbps"], g["memory_gb"], g["interconnect_gbps"]) == (8000, 270, 900)


def test_gb300_figures_from_verda_per_gpu_and_rack_tables():
    g = catalog.gpu("gb300")
    # per GPU without sparsity: FP4 15 PF, FP8 5, BF16 2.5, 279 GB, 8 TB/s, NVLink 900 GB/s one way;
    # the rack (72 GPUs): 1,080 PF FP4, 360 FP8, 180 BF16, 576 TB/s
    assert (g["fp4_tflops"], g["fp8_tflops"], g["peak_tflops"]) == (1_080_000 / 72, 360_000 / 72, 180_000 / 72)
    assert g["hbm_bandwidth_gbps"] == 576_000 / 72
    assert (g["memory_gb"], g["interconnect_gbps"]) == (279, 900)


@pytest.mark.parametrize("name", ["b200", "b300", "gb200", "gb300"])
def test_blackwell_entries_cite_every_figure(name):
    entry = catalog.gpu_entry(name)
    for field in (*GPU_FIELDS, "fp8_tflops", "fp4_tflops"):
        assert URL.search(str(entry["sources"].get(field, ""))), (name, field)
    g = catalog.gpu(name)
    assert g["peak_tflops"] < g["fp8_tflops"] < g["fp4_tflops"]


def test_only_fp4_parts_have_fp4_tflops():
    have = {n for n in catalog.gpu_names() if "fp4_tflops" in catalog.gpu(n)}
    assert have == {"b200", "b300", "gb200", "gb300"}


# --- MoE and latent-attention models --------------------------------------------------------


def _counts(name: str) -> tuple[int, int]:
    m = catalog.model(name)
    extra = {k: m[k] for k in (*MOE_FIELDS, *MLA_FIELDS) if k in m}
    return catalog.param_counts(**_shape_args(m), **extra)


# (model, total on the card, active on the card); totals within 0.5 %, active within 2 %: the
# cards round to two or three digits (DeepSeek's 37B is 37.55B computed, 1.5 % off).
CARDS = [
    ("deepseek-v3", 671e9, 37e9),
    ("deepseek-r1", 671e9, 37e9),
    ("qwen3-235b-a22b", 235e9, 22e9),
    ("gpt-oss-120b", 116.83e9, None),
]


@pytest.mark.parametrize(("name", "total", "active"), CARDS, ids=[c[0] for c in CARDS])
def test_moe_params_against_model_cards(name, total, active):
    t, a = _counts(name)
    assert t == catalog.model(name)["params"]
    assert t == pytest.approx(total, rel=0.005)
    if active is not None:
        assert a == pytest.approx(active, rel=0.02)


def test_gpt_oss_active_matches_the_card_without_the_unembedding():
    m = catalog.model("gpt-oss-120b")
    _, active = _counts("gpt-oss-120b")
    # OpenAI's 5.13B active leaves out the unembedding (vocab x hidden)
    assert active - m["vocab"] * m["hidden"] == pytest.approx(5.13e9, rel=0.005)


def test_dense_new_models_against_their_cards():
    assert catalog.model("qwen3-32b")["params"] == pytest.approx(32.8e9, rel=0.005)
    assert catalog.model("llama-3.1-8b")["params"] == catalog.model("llama-3-8b")["params"] == 8_030_261_248
    assert catalog.model("llama-3.1-70b")["params"] == catalog.model("llama-3-70b")["params"] == 70_553_706_496


def test_deepseek_shapes_as_in_config_json():
    m = catalog.model("deepseek-r1")
    assert (m["experts"], m["experts_per_token"], m["shared_experts"], m["expert_intermediate"]) == (256, 8, 1, 2048)
    assert (m["dense_layers"], m["kv_lora_rank"], m["qk_rope_head_dim"], m["layers"]) == (3, 512, 64, 61)


def test_param_counts_moe_by_hand():
    base = dict(layers=2, hidden=4, heads=2, kv_heads=1, head_dim=2, intermediate=8, vocab=10, tied_embeddings=False)
    # attention 2*4*2*2 + 2*4*1*2 = 48, norms 8: 56 a layer; embeddings 2*10*4 + final norm 4 = 84
    # layer 0 dense MLP 3*4*8 = 96; layer 1: 4 experts of 3*4*3 = 36 (144), 1 shared (36), router 4*4 = 16
    total = 2 * 56 + 84 + 96 + 144 + 36 + 16
    assert total == 488
    got = catalog.param_counts(
        **base, experts=4, experts_per_token=2, shared_experts=1, expert_intermediate=3, dense_layers=1
    )
    assert got == (488, 488 - 144 + 2 * 36)


def test_param_counts_latent_attention_by_hand():
    # q: 8*4 + 4 + 4*2*(2+1) = 60; kv: 8*(3+1) + 3 + 3*2*(2+2) = 59; o: 2*2*8 = 32; norms 16;
    # MLP 3*8*4 = 96; tied embeddings 3*8 + final norm 8 = 32
    got = catalog.param_counts(
        layers=1, hidden=8, heads=2, kv_heads=2, head_dim=2, intermediate=4, vocab=3, tied_embeddings=True,
        q_lora_rank=4, kv_lora_rank=3, qk_rope_head_dim=1, qk_nope_head_dim=2, v_head_dim=2,
    )  # fmt: skip
    assert got == (60 + 59 + 32 + 16 + 96 + 32,) * 2 == (295, 295)
